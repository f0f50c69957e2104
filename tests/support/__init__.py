"""Helpers shared by tests that are not fixtures (a TCP proxy for database fault tests)."""
