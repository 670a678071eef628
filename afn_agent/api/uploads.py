"""Uploads are hostile until proven otherwise: a size limit while streaming to disk, a sanitised
name, text G-code only, then the analyzer and the machine's policy before anything is queued."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from fastapi import HTTPException, UploadFile

EXTENSIONS = (".gcode", ".gco", ".g", ".nc", ".ngc", ".tap", ".cnc")
CHUNK = 1 << 20
SNIFF = 64 * 1024
SAFE = re.compile(r"[^A-Za-z0-9._ ()+-]")


MAX_NAME = 120


def safe_name(raw: str | None) -> str:
    """The file's own name without any directory part, odd characters replaced, shortened before its
    extension (a 200-character name keeps its `.gcode`); 400 when empty, 415 when not G-code."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = SAFE.sub("_", name).lstrip(".")
    if not name:
        raise HTTPException(400, "the upload has no file name")
    if not name.lower().endswith(EXTENSIONS):
        raise HTTPException(415, f"{name[:MAX_NAME]}: not a G-code file (accepted: {', '.join(EXTENSIONS)})")
    stem, dot, ext = name.rpartition(".")
    return stem[: MAX_NAME - len(ext) - 1] + dot + ext


async def receive(
    upload: UploadFile, spool: Path, limit_bytes: int, min_free_mb: float = 0.0
) -> tuple[Path, str]:
    """Copy an upload to a temporary file in the spool, checking size, content and the disk's free
    space (507 below `min_free_mb`, or when the disk fills) as it comes."""
    name = safe_name(upload.filename)
    try:
        spool.mkdir(parents=True, exist_ok=True)
        out = tempfile.NamedTemporaryFile(dir=spool, suffix=".upload", delete=False)  # noqa: SIM115
    except OSError as exc:
        raise HTTPException(507, f"{name}: the spool cannot take a file: {exc.strerror}") from None
    size = 0
    tmp = Path(out.name)
    try:
        with out:
            while chunk := await upload.read(CHUNK):
                if size < SNIFF:
                    _check_text(chunk[: SNIFF - size], name)
                size += len(chunk)
                if size > limit_bytes:
                    raise HTTPException(413, f"{name}: larger than the {limit_bytes // 1_000_000} MB limit")
                if shutil.disk_usage(spool).free - len(chunk) < min_free_mb * 1_000_000:
                    raise HTTPException(507, f"{name}: the disk is nearly full (uploads stop below "
                                             f"{min_free_mb:g} MB free, [agent] min_free_mb)")  # fmt: skip
                out.write(chunk)
    except OSError as exc:  # ENOSPC, EDQUOT, EIO: the upload is refused, nothing is left behind
        tmp.unlink(missing_ok=True)
        raise HTTPException(507, f"{name}: the spool cannot take it: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if size == 0:
        tmp.unlink(missing_ok=True)
        raise HTTPException(400, f"{name}: the file is empty")
    return tmp, name


# Bytes that never appear in text G-code: C0 controls other than tab, newlines, vertical tab, form feed
# and the DOS end-of-file mark, and DEL. (Non-ASCII bytes can: comments in UTF-8 or Latin-1.)
NOT_TEXT = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13, 26)) + b"\x7f"


def _check_text(head: bytes, name: str) -> None:
    """Binary content (a .bgcode, an image, an archive renamed .gcode) is refused by its first bytes."""
    stray = len(head) - len(head.translate(None, NOT_TEXT))
    if stray:
        raise HTTPException(
            415,
            f"{name}: binary content ({stray} control byte(s) in the first {len(head)}; binary G-code "
            ".bgcode is not supported); send text G-code",
        )
