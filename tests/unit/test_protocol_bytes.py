"""Issue 16: every protocol byte comes from a core. The machine thread wrote `M112`, `0x18` and
`M108 M410` itself, so a quirk fixed in a core could stay unfixed there."""

from __future__ import annotations

import re
from pathlib import Path

from afn_agent.firmware.grbl import GrblProtocol
from afn_agent.firmware.marlin import MarlinProtocol
from afn_agent.firmware.profile import load_profile

ROOT = Path(__file__).resolve().parents[2] / "afn_agent"
# A bytes literal that holds G-code (`b"M112\n"`, `b"G28"`) or a GRBL realtime byte (`b"!"`, `b"\x18"`).
PROTOCOL_BYTES = re.compile(r"""b(["'])(?:[GMT]\d|\\x18|\\x8[0-9a-f]|\\x9[0-9a-f]|[!~?]\1)""")


def test_no_protocol_byte_literal_outside_the_cores_and_the_simulators():
    found = []
    for path in ROOT.rglob("*.py"):
        part = path.relative_to(ROOT).parts[0]
        if part in ("firmware", "sim"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if PROTOCOL_BYTES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_cores_give_the_out_of_band_bytes():
    assert MarlinProtocol.STOP_BYTES == b"M112\n" and GrblProtocol.STOP_BYTES == b"\x18"
    marlin = MarlinProtocol(load_profile("marlin2"), 0.0)
    assert marlin.break_waits() == b"M108\nM410\n"
    assert marlin.emergency_stop() == MarlinProtocol.STOP_BYTES
    grbl = GrblProtocol(load_profile("grbl-1.1"), 0.0)
    assert grbl.emergency_stop() == GrblProtocol.STOP_BYTES


# Which protocol a machine speaks is asked once, when its driver is chosen (machine/drivers.py). The
# G-code dialect an analysis reads (gcode/) and the MQTT protocol version (bus/) are other questions.
PROTOCOL_BRANCH = re.compile(r"isinstance\([^)]*(?:Marlin|Grbl)Protocol|\.protocol\s*[!=]=")
BRANCH_ALLOWED = {("firmware",), ("sim",), ("gcode",), ("bus",), ("machine", "drivers.py")}


def test_no_protocol_branch_outside_the_drivers():
    found = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[:1] in BRANCH_ALLOWED or parts[:2] in BRANCH_ALLOWED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if PROTOCOL_BRANCH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
