"""Hot-path counters as plain integers: what the relay and gateway bump per read batch.

Nothing here knows Prometheus; ``rtgate.control.metrics`` turns these numbers into
metric families when ``/metrics`` is scraped, so the relay never touches a metrics
library object.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import attrs

HANDSHAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RELAY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0)
FIRST_AUDIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Time to a response's first audio: voice agents aim below a second."""
RELAY_SAMPLE_MASK = 31
"""The relay times one read batch in 32 (``batch_no & mask == 0``)."""


class LatencyHistogram:
    """Fixed-bucket histogram as plain integers (``observe`` is one bisect and two adds)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs as Prometheus wants them, ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_fmt(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _fmt(bound: float) -> str:
    return repr(float(bound))


@attrs.define
class RelayCounters:
    """Live counters every relay of the process adds to, once per read batch."""

    messages: dict[str, int] = attrs.field(factory=dict)
    """WebSocket messages by direction: ``client_in``, ``client_out``, ``upstream_in``, ``upstream_out``."""
    bytes: dict[str, int] = attrs.field(factory=dict)
    """Message payload bytes by the same directions."""
    limit_closes: dict[str, int] = attrs.field(factory=dict)
    """Sessions ended by a limit or by the gateway, by reason word."""
    latency: LatencyHistogram = attrs.field(factory=lambda: LatencyHistogram(RELAY_BUCKETS))
    """Sampled time from a read returning to the matching write finishing."""

    def add(self, direction: str, messages: int, size: int) -> None:
        self.messages[direction] = self.messages.get(direction, 0) + messages
        self.bytes[direction] = self.bytes.get(direction, 0) + size

    def limit(self, reason: str) -> None:
        self.limit_closes[reason] = self.limit_closes.get(reason, 0) + 1
