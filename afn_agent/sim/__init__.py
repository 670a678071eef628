"""Simulated firmwares on a pseudo-terminal, with the constraints of a real serial link."""
