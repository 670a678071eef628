"""Profiles: every shipped one loads; a broken one is refused with its file and field named."""

import pytest

from afn_agent.firmware.profile import ProfileError, available_profiles, load_profile

SHIPPED = {"marlin2", "prusa-mk3", "reprapfirmware", "smoothieware", "grbl-1.1", "grblhal", "fluidnc"}


def test_all_required_profiles_ship_and_load():
    assert set(available_profiles()) >= SHIPPED
    for name in SHIPPED:
        p = load_profile(name)
        assert p.name == name and p.link.baud > 0 and p.volume.axes and p.forbidden
        assert p.window_bytes == p.link.rx_buffer - 1


def test_members_may_not_write_eeprom_or_settings():
    assert {"M500", "M502", "M997"} <= set(load_profile("marlin2").forbidden)
    assert "$=" in load_profile("grbl-1.1").forbidden


def write(tmp_path, text):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[profile]\nname="x"\nprotocol="marlin"\n[link]\nbaud="fast"\n',
            "[link].baud: expected a positive number, got 'fast'",
        ),
        (
            '[profile]\nname="x"\nprotocol="marlin"\n[link]\nbaud=-5\n',
            "[link].baud: expected a positive number, got -5",
        ),
        ('[profile]\nname="x"\nprotocol="sprinter"\n', "[profile].protocol: expected one of marlin, grbl"),
        ('[profile]\nname="x"\n', "[profile].protocol: required"),
        ('[profile]\nname="x"\nprotocol="grbl"\n[link]\nbuad=115200\n', "[link].buad: unknown key"),
        ('[profile]\nname="x"\nprotocol="grbl"\n[volume]\nx=[10, 0]\n', "[volume].x: expected [min, max]"),
        (
            '[profile]\nname="x"\nprotocol="grbl"\n[policy]\nforbidden="M500"\n',
            "[policy].forbidden: expected a list",
        ),
        (
            '[profile]\nname="x"\nprotocol="grbl"\n[link]\nrx_buffer=64\nmax_line=80\n',
            "[link].max_line: must be below",
        ),
        ('[profile\nname="x"', "not valid TOML"),
    ],
)
def test_bad_profiles_name_the_file_and_field(tmp_path, text, message):
    f = write(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        load_profile(f)
    assert str(f) in str(err.value) and message in str(err.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match=r"unknown profile 'marlin9'.*marlin2"):
        load_profile("marlin9")
