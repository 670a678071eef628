"""Badge readers: the decoders on recorded bytes, the UART reader on a pseudo-terminal, evdev on uinput."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from afn_agent.access.readers import (
    EVENT,
    Em4100Decoder,
    EvdevReader,
    KeyDecoder,
    ReaderLoop,
    SimReader,
    UartReader,
)
from tests.helpers import wait_for

# a real RDM6300 frame: version 0x0A, card 0x00 0x12 0x34 0x56, checksum = XOR of the five
CARD = bytes([0x0A, 0x00, 0x12, 0x34, 0x56])
CHECK = CARD[0] ^ CARD[1] ^ CARD[2] ^ CARD[3] ^ CARD[4]
FRAME = b"\x02" + (CARD.hex().upper() + f"{CHECK:02X}").encode() + b"\x03"


def key_events(text: str, with_sync: bool = True) -> bytes:
    """What a keyboard-wedge reader sends for `text` then Enter: press and release of each key."""
    codes = {
        "0": 11,
        **{str(d): d + 1 for d in range(1, 10)},
        "A": 30,
        "B": 48,
        "C": 46,
        "D": 32,
        "E": 18,
        "F": 33,
    }
    out = b""
    for ch in [*text, "\n"]:
        code = 28 if ch == "\n" else codes[ch]
        for value in (1, 0):
            out += EVENT.pack(0, 0, 1, code, value)
            if with_sync:
                out += EVENT.pack(0, 0, 0, 0, 0)  # EV_SYN
    return out


def test_key_decoder_reads_uid_typed_by_a_hid_reader():
    d = KeyDecoder()
    data = key_events("0012345678") + key_events("ABCDEF01")
    # events arrive in arbitrary chunks, even cut mid-event
    got = [uid for i in range(0, len(data), 37) for uid in d.feed(data[i : i + 37])]
    assert got == ["0012345678", "ABCDEF01"]
    assert KeyDecoder().feed(key_events("12", with_sync=False)) == ["12"]


def test_em4100_frames_checksum_and_plain_lines():
    d = Em4100Decoder()
    assert d.feed(FRAME[:5]) == []
    assert d.feed(FRAME[5:] + FRAME) == ["0A00123456", "0A00123456"]
    bad = FRAME[:-3] + b"00\x03"
    assert d.feed(bad) == [] and d.bad_frames == 1
    assert d.feed(b"noise\r\n0012345678\r\n") == ["0012345678"]


def test_uart_reader_on_a_pty():
    master, slave = os.openpty()
    reader = UartReader(os.ttyname(slave))
    reader.open()
    try:
        os.write(master, FRAME)
        got = []
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            got = reader.read(0.2)
        assert got == ["0A00123456"]
    finally:
        reader.close()
        os.close(master)
        os.close(slave)


def test_reader_loop_debounces_and_reopens():
    seen, states = [], []
    reader = SimReader()
    loop = ReaderLoop(
        reader, seen.append, lambda s, why: states.append(s), debounce_s=0.5, reopen_s=0.1
    ).start()
    try:
        for _ in range(3):
            reader.present("CAFE01")
        wait_for(lambda: seen, 2, "the first read")
        time.sleep(0.2)  # real time: the repeats inside the debounce would be seen within this
        assert seen == ["CAFE01"]
        reader.gone = True  # unplugged
        wait_for(lambda: states and states[-1] == "lost", 2, "the reader lost")
        reader.gone = False
        wait_for(lambda: states[-1] == "open", 2, "the reader reopened")
        time.sleep(0.5)  # real time: past the 0.5 s debounce
        reader.present("CAFE01")  # past the debounce: a new read
        reader.present("BEEF02")
        wait_for(lambda: len(seen) == 3, 2, "both reads")
        assert seen == ["CAFE01", "CAFE01", "BEEF02"]
    finally:
        loop.stop()


def uinput_device():
    """A virtual keyboard through /dev/uinput (legacy write API), or None where the kernel forbids it."""
    import fcntl

    try:
        fd = os.open("/dev/uinput", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None
    UI_SET_EVBIT, UI_SET_KEYBIT, UI_DEV_CREATE = 0x40045564, 0x40045565, 0x5501
    fcntl.ioctl(fd, UI_SET_EVBIT, 1)
    for code in range(1, 100):
        fcntl.ioctl(fd, UI_SET_KEYBIT, code)
    name = b"afn-test-badge-reader".ljust(80, b"\0")
    user_dev = name + struct.pack("HHHHi", 3, 1, 1, 1, 0) + b"\0" * (4 * 64 * 4)
    os.write(fd, user_dev)
    fcntl.ioctl(fd, UI_DEV_CREATE)
    return fd


def test_evdev_reader_on_a_uinput_device():
    fd = uinput_device()
    if fd is None:
        pytest.skip("/dev/uinput is not available here (container without the uinput module)")
    try:
        time.sleep(0.5)  # real time: udev creates the event node (no signal here)
        path = next(
            f"/dev/input/{e}" for e in sorted(os.listdir("/dev/input"))
            if e.startswith("event") and "afn-test-badge-reader" in Path(f"/sys/class/input/{e}/device/name").read_text()
        )  # fmt: skip
        reader = EvdevReader(path)
        reader.open()
        os.write(fd, key_events("0012345678"))
        got = []
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            got = reader.read(0.2)
        reader.close()
        assert got == ["0012345678"]
    finally:
        os.close(fd)
