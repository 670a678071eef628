"""Arbitrary bytes from a firmware never break a core or its window invariant."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afn_agent.firmware.grbl import GrblProtocol
from afn_agent.firmware.marlin import MarlinProtocol
from tests.helpers import profile

PIECES = [
    b"ok\n",
    b"ok T:200 /200 B:60 /60\n",
    b"ok N5 P3 B1\n",
    b"Resend: 3\n",
    b"rs 2\n",
    b"Error:checksum mismatch\n",
    b"echo:busy: processing\n",
    b"wait\n",
    b"start\n",
    b'echo:Unknown command: "7"\n',
    b"error:20\n",
    b"ALARM:1\n",
    b"<Run|MPos:1,2,3|Bf:15,128>\n",
    b"Grbl 1.1h ['$' for help]\n",
    b"[OPT:V,15,128]\n",
    b"$10=1\n",
    b"[MSG:Disabled]\n",
    b"//action:cancel\n",
    b"Cap:ADVANCED_OK:1\n",
    b"\xff\x00\r\n",
]
chunks = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=40)), max_size=60)


@pytest.mark.parametrize(
    ("core_class", "profile_name"), [(MarlinProtocol, "marlin2"), (GrblProtocol, "grbl-1.1")]
)
@settings(max_examples=300, deadline=None)
@given(replies=chunks, lines=st.integers(min_value=0, max_value=40))
def test_core_survives_any_reply_stream(core_class, profile_name, replies, lines):
    core = core_class(profile(profile_name), 0.0)
    core.handshake(0.0)
    for i in range(lines):
        core.send(f"G1 X{i} Y{i} F100", i)
    t = 0.0
    for chunk in replies:
        core.data_to_send(t)
        largest = max((len(x.wire) for x in core.window.lines), default=0)
        assert core.window.bytes <= max(core.window.limit, largest)
        core.receive_data(chunk, t)
        core.tick(t)
        core.urgent_data()
        core.events()
        t += 0.7
