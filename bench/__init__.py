"""Benchmarks (not tests): commands that print figures with a same-process baseline ratio."""
