"""Benchmark scripts of dmae; run each with `python -m benchmarks.<name>`."""
