"""A firmware stand-in that answers `ok` to every line at once, with no pacing: for memory runs only.

The paced simulator would need hours for a 200 MB file; this measures the agent, not the link.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import tty


def main(link: str) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    tmp = link + ".tmp"
    os.symlink(os.ttyname(slave), tmp)
    os.replace(tmp, link)
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    banner_sent = False
    lines = 0
    while running:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            continue
        data = os.read(master, 65536)
        n = data.count(b"\n")
        lines += n
        reply = b""
        if not banner_sent:
            reply += b"FIRMWARE_NAME:okfirmware\n"
            banner_sent = True
        reply += b"ok\n" * n
        os.write(master, reply)
    os.unlink(link)
    print(lines, file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
