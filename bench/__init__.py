"""Benchmarks: every figure measured side by side with its baseline in one run, printed as
ratios (the machines are shared and noisy; absolute times drift, ratios hold)."""
