"""Benchmark evaluation: metrics (pure functions) and the JSON / markdown report."""
