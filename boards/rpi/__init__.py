"""The Raspberry Pi profile: the same roles as the ESP32 under CPython, with the relay on a
GPIO pin (gpiozero), the meter on a serial port (pyserial) and a systemd unit."""
