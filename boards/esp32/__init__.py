"""The ESP32 profile: boot and main entry points, the board over real pins and UART, the
meter line protocol and the config checker (see boot.py and main.py)."""
