"""What a benchmark run aims at and how big it is: targets, anchors, budgets, the run's plan.

Owns: the targets each figure is judged against (also written to the
results), the LiteLLM figures measured earlier on this kind of machine (shown
when LiteLLM is not run), the p99 budget and generator-lateness limit the
stages stop at, and :class:`Plan`, the durations and sizes of a full or a
``--quick`` run.
"""

from __future__ import annotations

# LiteLLM figures measured on this kind of machine (reference when it is not run here).
LITELLM_ANCHORS = {
    "cpu_s_per_1000_messages": 0.18,
    "sessions_per_core_p99_50ms": 50,
    "added_latency_ms_p50_1_session": 1.0,
    "rss_start_mb": 313,
    "rss_per_idle_session_kib": 119,
    "setups_per_s": 44,
    "cpu_ms_per_setup": 14.5,
}
TARGETS = {
    "cpu_s_per_1000_messages": 0.04,
    "beta_over_passthrough": 1.5,
    "gemini_over_passthrough": 3.0,
    "sessions_per_core_p99_50ms": 200,
    "added_latency_ms_p50_1_session": 0.3,
    "added_latency_ms_p99_1_session": 2.0,
    "rss_start_mb": 60,
    "rss_per_idle_session_kib": 30,
    "setups_per_s": 300,
    "cpu_ms_per_setup": 1.5,
    "workers_scaling_per_worker": 0.8,
    "warm_minus_local_ms": 5.0,
}
P99_BUDGET_MS = 50.0
GENERATOR_LATE_MS = 10.0
"""A generator whose sends are this late (p99) measures itself, not the proxy."""


class Plan:
    """Durations and sizes of one run (``--quick`` shrinks everything)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.latency_seconds = 0.3 if quick else 15.0
        self.cpu_sessions = 2 if quick else 50
        self.cpu_seconds = 0.3 if quick else 10.0
        self.sweep = [2] if quick else [50, 100, 150, 200, 250, 300]
        self.sweep_seconds = 0.3 if quick else 8.0
        self.idle_sessions = 3 if quick else 200
        self.soak_sessions = 2 if quick else 100
        self.soak_seconds = 0.3 if quick else 30.0
        self.setups = 5 if quick else 400
        self.warmup = 0.1 if quick else 1.0
        self.worker_counts = [1, 2]
        # Sessions per worker: every worker count is compared at the same per-worker load.
        self.worker_sessions = [2] if quick else list(range(50, 501, 50))
        self.worker_seconds = 0.3 if quick else 8.0
        # None: bench.warmstart's own sizes for a quick or full run (the smoke test shrinks them).
        self.warmstart_sessions: int | None = None
        self.warmstart_handshake_delay: float | None = None
