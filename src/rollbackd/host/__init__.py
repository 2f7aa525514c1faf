"""What rollbackd needs of the machine it runs on: atomic file writes, external commands, other processes, HTTP."""
