"""Sans-I/O protocol cores for machine firmwares, and the profiles that describe them."""
