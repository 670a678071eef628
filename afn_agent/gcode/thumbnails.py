"""Pictures slicers embed in G-code (PrusaSlicer, SuperSlicer, OrcaSlicer, Bambu Studio, Cura's plugin):
base64 blocks in comments, `; thumbnail begin WxH LEN` (PNG), `thumbnail_JPG`, `thumbnail_QOI`.

Read once at upload from the head of the file (where slicers put them); the largest picture that is not
too large is kept as a PNG or JPEG the screen can show. QOI (PrusaSlicer's option) is decoded here and
written back as PNG: browsers do not read QOI.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

PNG = bytes.fromhex("89504e470d0a1a0a")  # the PNG signature
JPEG = bytes.fromhex("ffd8")
SCAN_BYTES = 4_000_000  # thumbnails sit in the first kilobytes; a file without them is not read further
MAX_SIDE = 640
MAX_PIXELS = 640 * 640
BEGIN_RE = re.compile(r"^;\s*thumbnail(?:_(PNG|JPG|QOI))?\s+begin\s+(\d+)x(\d+)\s+(\d+)", re.I)
ANY_RE = re.compile(r"thumbnail", re.I)
END_RE = re.compile(r"^;\s*thumbnail(?:_(?:PNG|JPG|QOI))?\s+end", re.I)


@dataclass(frozen=True)
class Thumbnail:
    media_type: str  # image/png | image/jpeg
    width: int
    height: int
    data: bytes


def extract(path: str | Path) -> Thumbnail | None:
    """The best embedded picture of a file, or None (none, or none that decodes)."""
    found: list[Thumbnail] = []
    kind, size, chunks = "", (0, 0), list[str]()
    with open(path, "rb") as f:
        head = f.read(SCAN_BYTES).decode("ascii", "replace")
    if not ANY_RE.search(head):  # most files: no picture, and no line-by-line look for one
        return None
    for line in head.splitlines():
        if kind:
            if END_RE.match(line):
                if (picture := _decode(kind, size, "".join(chunks))) is not None:
                    found.append(picture)
                kind = ""
            else:
                chunks.append(line.lstrip(";").strip())
        elif m := BEGIN_RE.match(line):
            kind, size, chunks = (m.group(1) or "PNG").upper(), (int(m.group(2)), int(m.group(3))), []
    fitting = [t for t in found if t.width <= MAX_SIDE and t.height <= MAX_SIDE]
    return max(fitting, key=lambda t: t.width * t.height, default=None)


def _decode(kind: str, size: tuple[int, int], text: str) -> Thumbnail | None:
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None
    width, height = size
    if kind == "PNG" and data.startswith(PNG):
        return Thumbnail("image/png", width, height, data)
    if kind == "JPG" and data.startswith(JPEG):
        return Thumbnail("image/jpeg", width, height, data)
    if kind == "QOI" and data.startswith(b"qoif"):
        decoded = qoi_to_png(data)
        return Thumbnail("image/png", width, height, decoded) if decoded else None
    return None


def qoi_to_png(data: bytes) -> bytes | None:
    """A QOI image (the format's published specification, qoiformat.org) as a PNG; None if malformed."""
    if len(data) < 22:
        return None
    width, height, channels, _ = struct.unpack(">IIBB", data[4:14])
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and channels in (3, 4)):
        return None
    pixels = bytearray()
    seen = [(0, 0, 0, 0)] * 64
    r, g, b, a = 0, 0, 0, 255
    i, end, run = 14, len(data) - 8, 0
    for _ in range(width * height):
        if run:
            run -= 1
        elif i < end:
            tag = data[i]
            i += 1
            if tag == 0xFE:
                r, g, b = data[i], data[i + 1], data[i + 2]
                i += 3
            elif tag == 0xFF:
                r, g, b, a = data[i], data[i + 1], data[i + 2], data[i + 3]
                i += 4
            elif tag >> 6 == 0:
                r, g, b, a = seen[tag]
            elif tag >> 6 == 1:
                r = (r + (tag >> 4 & 3) - 2) & 255
                g = (g + (tag >> 2 & 3) - 2) & 255
                b = (b + (tag & 3) - 2) & 255
            elif tag >> 6 == 2:
                dg = (tag & 0x3F) - 32
                nxt = data[i]
                i += 1
                r = (r + dg - 8 + (nxt >> 4)) & 255
                g = (g + dg) & 255
                b = (b + dg - 8 + (nxt & 15)) & 255
            else:
                run = tag & 0x3F
            seen[(r * 3 + g * 5 + b * 7 + a * 11) % 64] = (r, g, b, a)
        pixels += bytes((r, g, b, a))
    return _png(width, height, bytes(pixels))


def _png(width: int, height: int, rgba: bytes) -> bytes:
    """An RGBA PNG (no filtering), written with zlib only."""
    stride = width * 4
    raw = b"".join(b"\x00" + rgba[y * stride:(y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return PNG + body
