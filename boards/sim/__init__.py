"""A simulated board for host runs: clock, contactor, battery and signing meter, so the
vehicle and charger roles run whole sessions on CPython without hardware."""
