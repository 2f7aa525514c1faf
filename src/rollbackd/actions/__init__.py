"""What rollbackd does to a service: stop, start, restart (control), and later downgrades and the executor."""
