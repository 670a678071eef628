"""One bounded JSON decoder for everything that arrives from the network (MQTT payloads, directory sync).

`json.loads` recurses once per nesting level: 4 KB of `[[[[…` raised RecursionError inside paho's
network thread and killed it. Size and depth are checked on the raw bytes first, and every failure
comes out as one exception, `Malformed`, a ValueError the callers already handle.
"""

from __future__ import annotations

import json
from typing import Any

MAX_BYTES = 1 << 20  # a directory snapshot of a large lab fits; anything bigger is refused unread
MAX_DEPTH = 32  # our payloads nest 4 deep at most


class Malformed(ValueError):
    """A payload that is not a JSON document we accept; `reason` says which limit or rule it broke."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def nesting_depth(data: bytes) -> int:
    """Deepest `[`/`{` nesting outside strings, without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def decode_json(payload: bytes | str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The document in `payload`, or Malformed: too large, too deep, not UTF-8, not JSON."""
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    if len(data) > max_bytes:
        raise Malformed(f"payload of {len(data)} bytes (at most {max_bytes})")
    opened = data.count(b"[") + data.count(b"{")
    if opened > max_depth and (depth := nesting_depth(data)) > max_depth:
        raise Malformed(f"JSON nested {depth} deep (at most {max_depth})")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
