"""The ESP32 profile: boot and main entry points and the board on real pins and UART (the
board itself, the meter line and the config checker are in ``boards/common``)."""
