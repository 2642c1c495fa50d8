"""Board profiles and entry points: ESP32, Raspberry Pi and the simulated board."""
