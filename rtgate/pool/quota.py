"""Admission accounting: the slots and minute windows a session takes before its dial.

Pure: no clock (time enters as ``now``), no I/O. A session asks for a list of
:class:`Claim` at once; :meth:`Ledger.take` grants all of them or none (the
first refusal wins), so two handshakes interleaved by the event loop can never
both take the last slot. The grant is recorded under the session's lease id and
given back by :meth:`Ledger.give_back`, exactly once however the session ends.

A claim's scope names what it limits: ``gateway`` (``rtgate.limits.max_sessions``),
``key:ALIAS`` (a key's ``max_sessions`` and ``rpm_limit``) or ``deployment:ID``
(``max_parallel_requests`` and ``rpm``). The same scopes and rules are what the
shared stores (:mod:`rtgate.shared`) keep in SQLite or Redis.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import attrs

WINDOW_SECONDS = 60.0
"""Per-minute limits count session starts in a sliding window of this length."""
BUSY_RETRY_SECONDS = 1.0
"""Advice to a client refused for concurrency: sessions end at no predictable time."""


@attrs.frozen
class Claim:
    """One limit a session must fit under: at most ``concurrent`` live leases in
    ``scope`` and at most ``per_minute`` starts in its last minute (None: no cap)."""

    scope: str
    concurrent: int | None = None
    per_minute: int | None = None

    @property
    def binding(self) -> bool:
        """Does this claim limit anything?"""
        return self.concurrent is not None or self.per_minute is not None


@attrs.frozen
class Refusal:
    """Why a :meth:`Ledger.take` was refused: the scope, which cap, when to retry."""

    scope: str
    cap: str
    """``concurrent`` or ``per_minute`` (a shared store also says ``cooling``: the
    deployment is ejected, or its half-open trial runs elsewhere)."""
    retry_after: float


@attrs.define
class _Scope:
    leases: set[str] = attrs.field(factory=set)
    starts: deque[tuple[float, str]] = attrs.field(factory=deque)
    """(start time, lease id) of the sessions started in the last minute."""

    def expire(self, now: float) -> None:
        horizon = now - WINDOW_SECONDS
        while self.starts and self.starts[0][0] <= horizon:
            self.starts.popleft()


def check(claim: Claim, active: int, starts: Sequence[float], now: float) -> Refusal | None:
    """Would one more session fit ``claim`` with ``active`` live leases and the given
    start times (oldest first, all within the last minute)? The rule every store applies."""
    if claim.concurrent is not None and active >= claim.concurrent:
        return Refusal(claim.scope, "concurrent", BUSY_RETRY_SECONDS)
    if claim.per_minute is not None and len(starts) >= claim.per_minute:
        # A start frees a place when the one per_minute-th from the end leaves the window.
        oldest_counted = starts[len(starts) - claim.per_minute]
        return Refusal(claim.scope, "per_minute", max(oldest_counted + WINDOW_SECONDS - now, 0.001))
    return None


class Ledger:
    """Leases per scope in one process (the local store, and the fallback of the shared ones)."""

    def __init__(self) -> None:
        self._scopes: dict[str, _Scope] = {}
        self._held: dict[str, tuple[str, ...]] = {}
        """Lease id -> scopes it holds a slot in."""

    def take(self, lease: str, claims: Iterable[Claim], now: float) -> Refusal | None:
        """Grant every claim to ``lease``, or none: the first that does not fit is returned.

        Claims without a cap are recorded too, so every scope's count is exact
        (for metrics, and for a cap a reload adds)."""
        wanted = list(claims)
        for claim in wanted:
            scope = self._scopes.get(claim.scope)
            if scope is None or not claim.binding:
                continue
            scope.expire(now)
            refusal = check(claim, len(scope.leases), [t for t, _ in scope.starts], now)
            if refusal is not None:
                return refusal
        held = list(self._held.get(lease, ()))
        for claim in wanted:
            scope = self._scopes.setdefault(claim.scope, _Scope())
            scope.leases.add(lease)
            scope.starts.append((now, lease))
            held.append(claim.scope)
        self._held[lease] = tuple(held)
        return None

    def give_back(self, lease: str, *, started: bool = True) -> None:
        """End ``lease``: its slots are free. A session that never ``started`` (its dial
        failed or was abandoned) also gives back its place in the minute windows."""
        for name in self._held.pop(lease, ()):
            scope = self._scopes.get(name)
            if scope is None:
                continue
            scope.leases.discard(lease)
            if not started:
                scope.starts = deque(s for s in scope.starts if s[1] != lease)
            if not scope.leases and not scope.starts:
                del self._scopes[name]

    def holds(self, lease: str) -> bool:
        return lease in self._held

    def active(self, scope: str) -> int:
        """Live leases in ``scope``."""
        found = self._scopes.get(scope)
        return len(found.leases) if found is not None else 0

    def started_last_minute(self, scope: str, now: float) -> int:
        found = self._scopes.get(scope)
        if found is None:
            return 0
        found.expire(now)
        return len(found.starts)

    def active_by_prefix(self, prefix: str) -> dict[str, int]:
        """Live leases of every scope named ``prefix + NAME``, by NAME."""
        return {
            name[len(prefix) :]: len(scope.leases)
            for name, scope in self._scopes.items()
            if name.startswith(prefix) and scope.leases
        }
