"""The runbook's bad deployments, injectable one at a time: see `catalog` for the list."""
