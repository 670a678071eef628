"""Issue 15, class 14: a malformed directory entry's raw badge UID was written to the log and the audit."""

from __future__ import annotations

import pytest

from afn_agent.access.directory import DirectoryError, _member_entry


@pytest.mark.parametrize("badge", [{"uid": "0A00123456"}, {"hash": "0A00123456"}, ["0A00123456"], 123456])
def test_a_malformed_badge_entry_is_refused_without_its_value(badge):
    with pytest.raises(DirectoryError) as err:
        _member_entry({"id": "m-1", "badges": [badge]}, 0, "a-site-secret-0123456789")
    assert "members[0] (m-1).badges" in str(err.value)
    assert "0A00123456" not in str(err.value) and "123456" not in str(err.value)


@pytest.mark.parametrize("key", ["badges", "trainings"])
def test_a_member_whose_lists_are_not_lists_is_refused_by_name(key):
    """`"trainings": 5` used to raise TypeError inside the MQTT thread instead of a refusal."""
    with pytest.raises(DirectoryError, match=rf"members\[0\] \(m-1\)\.{key}: expected a list"):
        _member_entry({"id": "m-1", key: 5}, 0, "a-site-secret-0123456789")
