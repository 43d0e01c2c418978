"""The benchmark suite behind ``make bench``: its own stack, a fixed suite, BENCHMARKS.md."""
