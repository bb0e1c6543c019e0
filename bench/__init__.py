"""Benchmarks: one module per distkit package, each printing distkit and its peers from the same run."""
