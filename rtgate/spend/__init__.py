"""Cost and budgets: pure functions over usage, prices, keys and time (no I/O)."""
