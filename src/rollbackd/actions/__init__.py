"""What rollbackd does to a service: control it, migrate it, restore it; and the executor that runs a plan."""
