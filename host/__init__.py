"""Host-side services: PBFT ledger replicas, RA, MQTT gateway (CPython only)."""
