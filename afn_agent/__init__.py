"""afn-agent: the machine-side agent of a fab lab."""

__version__ = "0.1.0"
