"""Continuous replication of a service's database by Litestream: the child rollbackd supervises (or the
operator's own unit), and restores from its replica."""
