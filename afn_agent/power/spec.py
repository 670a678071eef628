"""How a power switch is named in the configuration (read by config.py, which must not import the
drivers)."""

from __future__ import annotations

import re

SPEC = re.compile(
    r"sim|gpio:[A-Za-z0-9_/.-]+:\d{1,4}(:active_low)?|tasmota:[A-Za-z0-9_.-]{1,64}"
    r"|shelly:[A-Za-z0-9.-]+(:\d{1,5})?(#\d{1,2})?"
)
