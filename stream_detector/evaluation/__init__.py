"""Detection-quality metrics and report plots (shared by ``evaluate`` and the benchmarks)."""
