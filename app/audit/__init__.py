"""Audit service: the append-only, hash-chained audit log."""
