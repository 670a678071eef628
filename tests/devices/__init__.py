"""Emulators of devices we cannot run here, each built from the device's published protocol, field for
field (the reference is named in each module). They are test doubles, not the devices."""
