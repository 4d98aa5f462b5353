"""A deterministic in-process model that speaks GA: the ``mock`` provider, for demos, tests and benchmarks (pure)."""
