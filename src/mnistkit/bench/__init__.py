"""Benchmarks that print figures (never a pass/fail on time)."""
