"""What the ESP32 and the Raspberry Pi share: the board over a relay and a serial meter
(``hardware``), the meter's line protocol (``meter_line``) and the config checker
(``profile``). Portable (MicroPython and CPython); each board's folder adds only its pins,
UART or gpiozero glue."""
