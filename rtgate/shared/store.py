"""What a shared store answers, and the one interface both stores implement.

A *lease* is one holder of slots: a session's gateway and key slots, or its
slot on one deployment (its own lease, so a failed dial gives back only that).
Each store entry names the process that holds it (its *member* id) so the
admin view can say which host holds what. Times are the store's own clock
(Redis ``TIME``, the host's wall clock for SQLite), never the caller's, so hosts
with skewed clocks agree on every expiry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs

from rtgate.pool.quota import Claim, Refusal

DEPLOYMENT_SCOPE_PREFIX = "deployment:"
TRIAL_SECONDS_MIN = 1.0


class StoreUnavailable(Exception):
    """The store could not be reached or answered with an error (the message says which)."""


@attrs.frozen
class Grant:
    """The answer to :meth:`SharedStore.take`: refused (why), or granted (and whether this
    lease holds the deployment's one half-open trial, across every host)."""

    refusal: Refusal | None
    trial: bool = False


@attrs.frozen
class Verdict:
    """A deployment ejected by some host: cooling ``remaining`` more seconds (0: half-open,
    the next session anywhere is its trial) at ejection ``level``."""

    deployment: str
    remaining: float
    level: int


@attrs.frozen
class SharedView:
    """Live leases per scope, the same per member, ejections and live members."""

    active: Mapping[str, int]
    by_member: Mapping[str, Mapping[str, int]]
    verdicts: Sequence[Verdict]
    members: int


class SharedStore(Protocol):
    """Synchronous and atomic per call; raises :class:`StoreUnavailable` when unreachable."""

    kind: str
    """``host`` (SQLite, one host's workers) or ``redis``."""
    member: str
    """This process's id in the store (``HOST:PID``)."""

    def take(
        self, lease: str, claims: Sequence[Claim], ttl: float, deployment: str | None = None
    ) -> Grant:
        """Grant every claim to ``lease`` for ``ttl`` seconds, or none. With ``deployment``,
        its shared health is checked first: cooling refuses, half-open grants the one
        trial (to a single lease at a time) or refuses."""

    def give_back(self, lease: str, scopes: Sequence[str], started: bool) -> None:
        """End ``lease`` in ``scopes``; one that never ``started`` also leaves the minute windows."""

    def give_back_many(self, ends: Sequence[tuple[str, Sequence[str], bool]]) -> None:
        """:meth:`give_back` of each ``(lease, scopes, started)``, in one round trip (a
        session's end gives back its own lease and its deployment's together)."""

    def renew(self, leases: Mapping[str, Sequence[str]], ttl: float) -> int:
        """Extend every live lease of this member by ``ttl`` and the member's own presence;
        leases the store lost (a restart, a partition longer than ``ttl``) are added
        back. Returns the number of live members."""

    def eject(self, deployment: str, seconds: float, level: int) -> None:
        """Record an ejection for everyone (replaces any earlier one, ends a trial)."""

    def restore(self, deployment: str) -> None:
        """The deployment is healthy again for everyone."""

    def end_trial(self, deployment: str, lease: str) -> None:
        """``lease``'s trial ended without a verdict (abandoned): another may run."""

    def verdicts(self, deployments: Sequence[str]) -> list[Verdict]:
        """Current ejections among ``deployments``."""

    def view(self) -> SharedView: ...

    def close(self) -> None: ...


def deployment_scope(deployment_id: str) -> str:
    return DEPLOYMENT_SCOPE_PREFIX + deployment_id
