# The compiled reader of a job's plain lines (_jobfile.c); mypy checks job.py against it.

from typing import Any

def plain_commands(
    block: bytes, pos: int, n: int, max_line: int, line_no: int, offset: int, pos_type: type[Any], /
) -> tuple[list[tuple[str, Any, str]], int, int, int]:
    """(up to n commands as (text, pos_type(line, offset), ""), pos, line_no, offset) after them."""
