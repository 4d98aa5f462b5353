"""Fakes and harnesses shipped with rtgate for its tests and benchmarks (fake providers, an in-process gateway)."""
