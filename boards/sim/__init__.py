"""A simulated board for host runs and MicroPython processes: clock, cable, battery and a
simulated meter, so the vehicle and charger roles run whole sessions without hardware."""
