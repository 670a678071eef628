"""Secrets handed to people and programs (API keys, session and sign-in tokens), made in one place.

A URL-safe token starts with `-` one time in 64, and a command line then reads it as an option
(`--key -Xb…` was refused by argparse in a CI run); these never start with one."""

from __future__ import annotations

import secrets


def new_secret(nbytes: int) -> str:
    """`nbytes` random bytes as URL-safe text that does not start with `-`."""
    while True:
        text = secrets.token_urlsafe(nbytes)
        if not text.startswith("-"):
            return text
