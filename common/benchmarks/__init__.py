"""Benchmarks that print tables: profiling, memory per volume, model complexity, CPU-option A/B."""
