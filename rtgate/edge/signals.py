"""Stop requests by signal: copies of one delivery count once.

A SIGTERM sent to a process group (``kill -- -PGID``, a ``timeout`` wrapper, a
container runtime, Ctrl-C in a terminal with ``--workers``, where the terminal
signals every worker and the supervisor forwards a TERM too) reaches a process
two or more times within milliseconds. Taking the second copy as "hurry" would
close every live session at once. :class:`StopRequests` treats TERM or INT again
within :data:`SAME_REQUEST_SECONDS` of the last one it counted as the same
request; only a later one is a new request (the second hurries the drain).
"""

from __future__ import annotations

import attrs

SAME_REQUEST_SECONDS = 1.0
"""A stop signal this soon after the last counted one is a copy of the same request."""


@attrs.define
class StopRequests:
    """Counts stop requests; ``now`` is the caller's clock (``trio.current_time()``)."""

    window: float = SAME_REQUEST_SECONDS
    count: int = 0
    _last: float | None = None

    def note(self, now: float) -> bool:
        """Record a stop signal; True if it is a new request, False if a copy."""
        if self._last is not None and now - self._last < self.window:
            return False
        self._last = now
        self.count += 1
        return True
