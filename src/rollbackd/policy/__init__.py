"""The recovery brain: signals over observations, rules from the runbook, the per-service state machine."""
