"""Board profiles and entry points: ESP32, Raspberry Pi, what they share, and the simulated board."""
