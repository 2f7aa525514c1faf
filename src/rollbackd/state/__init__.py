"""rollbackd's own state: its directory, the history database and its migrations, the script vault, and the lock
that keeps one actor at a time on a service."""
