"""What GRBL's numbered errors and alarms mean, in words a member or manager can act on."""

ERRORS = {
    1: "a G-code word has no letter",
    2: "a number is malformed or missing",
    3: "unknown or unsupported '$' system command",
    4: "a value that must be positive is negative",
    5: "homing is not enabled in the settings",
    6: "step pulse time must be at least 3 microseconds",
    7: "EEPROM read failed; settings were reset to defaults",
    8: "this '$' command needs the machine to be idle",
    9: "G-code is locked out while in alarm or jog state",
    10: "soft limits need homing to be enabled",
    11: "line too long; it was not executed",
    12: "setting exceeds the maximum step rate",
    13: "the safety door is open",
    14: "build info or startup line is too long for EEPROM",
    15: "jog target is outside the machine's travel",
    16: "jog command lacks '=' or holds a forbidden G-code",
    17: "laser mode needs a PWM output",
    20: "unsupported or invalid G-code command",
    21: "two commands of the same modal group in one block",
    22: "feed rate not set",
    23: "the command needs an integer value",
    24: "two commands in one block both need the axis words",
    25: "a G-code word is repeated in the block",
    26: "the command needs axis words and has none",
    27: "line number out of range",
    28: "the command lacks a required P or L word",
    29: "unsupported work coordinate system",
    30: "G53 needs G0 or G1 motion mode",
    31: "axis words left over with G80 active",
    32: "arc with no axis words in the selected plane",
    33: "the motion target is invalid",
    34: "the arc radius is invalid",
    35: "arc offset word missing in the selected plane",
    36: "unused words left in the block",
    37: "tool length offset not on the configured axis",
    38: "tool number above the supported maximum",
}

ALARMS = {
    1: "hard limit switch triggered; position is lost, re-home",
    2: "motion target beyond the machine's travel (soft limit)",
    3: "reset while moving; position may be lost, re-home",
    4: "probe was not in its expected state before probing",
    5: "probe did not make contact",
    6: "homing failed: reset during homing",
    7: "homing failed: safety door opened during homing",
    8: "homing failed: could not pull off the limit switch",
    9: "homing failed: limit switch not found",
    10: "emergency stop asserted",
    11: "homing required before moving",
    12: "limit switch engaged at start",
    13: "probe protection triggered",
    14: "spindle did not reach speed in time",
    15: "homing failed: second limit switch of a ganged axis not found",
}


def error_meaning(code: int) -> str:
    return ERRORS.get(code, f"error {code} (not in the GRBL 1.1 table; see the firmware's docs)")


def alarm_meaning(code: int) -> str:
    return ALARMS.get(code, f"alarm {code} (not in the GRBL 1.1 table; see the firmware's docs)")
