"""Helpers the benchmarks share: big files made of real lines, and a child process's peak memory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def fill_file(path: Path, body: bytes, megabytes: int) -> Path:
    """A file of at least `megabytes` MB made by repeating `body` (whole lines)."""
    with open(path, "wb") as out:
        while out.tell() < megabytes * 1_000_000:
            out.write(body)
    return path


def run_measured(cmd: list[str], **popen) -> tuple[str, float]:
    """Run a command to its end; its stdout and its peak RSS in MB (from wait4, the kernel's figure)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, **popen)
    _, _, usage = os.wait4(p.pid, 0)
    return p.stdout.read().decode(), usage.ru_maxrss / 1024
