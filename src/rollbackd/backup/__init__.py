"""Backups of the service's SQLite database: take, describe, list, rotate, prove by drill, restore."""
