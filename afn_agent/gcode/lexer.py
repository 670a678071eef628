"""The smallest G-code reading the streamer needs: what part of a line goes on the wire."""

from __future__ import annotations

import re

PAREN_COMMENT = re.compile(r"\([^)]*\)")


def wire_text(raw: str, *, parens: bool = True) -> str:
    """A line without its comments and surrounding blanks; '' if nothing is left to send.

    `;` starts a comment everywhere except inside an M117/M118 message, whose text is the member's.
    `( )` comments are removed when `parens` is set (GRBL and most CNC dialects).
    """
    text = raw.strip()
    if not text or text[0] in ";%":
        return ""
    upper = text[:5].upper()
    if not (upper.startswith("M117") or upper.startswith("M118")):
        cut = text.find(";")
        if cut >= 0:
            text = text[:cut]
    if parens and "(" in text:
        text = PAREN_COMMENT.sub("", text)
    return text.strip()
