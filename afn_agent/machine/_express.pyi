# The compiled exchange (_express.c): its contract, in one place; mypy checks every caller against it.

DONE: int  # the batch is out
TIME: int  # the time given is up
WOKEN: int  # another thread woke the machine thread
OTHER: int  # a line that is not a plain ok came: it starts `rest`
LOST: int  # the port failed (`errno`, 0 for its end)

class WriteLock:
    """A port's write lock: Python writers take it with `with`, the exchange around each write."""

    def acquire(self) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc: object) -> bool: ...

def exchange(
    fd: int,
    wake_fd: int,
    lock: WriteLock,
    wires: list[bytes],
    oldest: int,
    win_start: int,
    next_seq: int,
    sizes: list[int],
    limit: int,
    depth: int,
    seconds: float,
    write_timeout: float,
    /,
) -> tuple[int, int, int, list[tuple[int, int, int, int]], bytes, int, int, int]:
    """(why, lines sent, bytes written, oks as (n, p, b, lines sent before it), rest, errno, the highest
    line answered, the highest line out of the RX ring): -1 for none."""
