"""This process's side of shared state: leases, renewal, shared health, outages.

With a store (:mod:`rtgate.shared`: SQLite for one host's workers, Redis for
many hosts) every admission is decided by the store, atomically for every
process at once. :class:`SharedState` calls the store from a worker thread at
setup, at renewal and at each session's end, never per frame, and keeps a
local record of this process's leases in the admission :class:`Ledger`.

Renewal (every third of ``rtgate.lease_seconds``) extends this process's
leases, re-adds any the store lost, publishes the ejections and restorations
this process's pool decided and adopts the ones other processes decided, so
warm pools and health probes obey the shared verdict too.

When the store is unreachable the outage is logged once, shown by
``/health/readiness`` and ``rtgate_shared_state_up 0``, and admission goes on
locally on this process's share of every limit: ``max(1, limit // N)`` where N
is the number of rtgate processes the store last counted (never unlimited).
``router_settings.shared_state_outage: closed`` refuses new sessions (503)
instead. Renewal keeps trying every second; on recovery the leases taken
during the outage are added to the store and shared admission resumes.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
import trio

from rtgate.config.model import GatewayConfig
from rtgate.errors import NoDeploymentAvailable, scrub
from rtgate.pool.quota import Claim, Ledger
from rtgate.pool.router import Pool
from rtgate.shared.store import Grant, SharedStore, SharedView, StoreUnavailable

log = logging.getLogger("rtgate.shared")

T = TypeVar("T")
RETRY_SECONDS = 1.0
"""While the store is unreachable, how often renewal tries again."""
SHARED_STATE_FILE_ENV = "RTGATE_SHARED_STATE_FILE"
"""Set by the supervisor of ``--workers N``: the SQLite file its workers share."""


def member_id() -> str:
    """This process in the store: ``HOST:PID``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def open_store(config: GatewayConfig) -> SharedStore | None:
    """The store this process shares state through: Redis when ``router_settings`` names
    one (LiteLLM's rule), else the supervisor's SQLite file, else none (one process)."""
    if config.router.redis_configured():
        from rtgate.shared.redis_store import RedisStore, client_from_settings

        return RedisStore(client_from_settings(config.router), member_id())
    path = os.environ.get(SHARED_STATE_FILE_ENV)
    if path:
        from rtgate.shared.sqlite_store import SqliteStore

        return SqliteStore(path, member_id())
    return None


def share(cap: int | None, members: int) -> int | None:
    """This process's part of ``cap`` during an outage."""
    return None if cap is None else max(1, cap // max(members, 1))


@attrs.define(eq=False)
class SharedState:
    """See module docstring. ``ledger`` is the admission's local record of leases."""

    store: SharedStore
    config: GatewayConfig
    pool: Pool
    ledger: Ledger
    up: bool = True
    members: int = 1
    """Live rtgate processes sharing the store, as it last said."""
    last_error: str | None = None
    leases: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    """Live leases of this process and the scopes each holds."""
    published: dict[str, int] = attrs.field(factory=dict)
    _limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(16))
    _renewing: trio.Lock = attrs.field(factory=trio.Lock)
    """Held by renewal and by give-backs, so a renewal never re-adds a lease just ended."""
    _wake: trio.Event = attrs.field(factory=trio.Event)

    @property
    def kind(self) -> str:
        return self.store.kind

    @property
    def outage_closed(self) -> bool:
        return self.config.router.shared_state_outage == "closed"

    @property
    def ttl(self) -> float:
        return self.config.server.lease_seconds

    def reconfigure(self, config: GatewayConfig) -> None:
        self.config = config

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        try:
            result = await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except StoreUnavailable as exc:
            self._down(str(exc))
            raise
        return result

    def _down(self, error: str) -> None:
        error = scrub(error, self.config.secret_values())
        self.last_error = error
        if self.up:
            self.up = False
            mode = self.config.router.shared_state_outage
            log.error(
                "shared state (%s) unreachable: %s; %s", self.kind, error,
                "refusing new sessions (shared_state_outage: closed)" if mode == "closed"
                else f"admitting on this process's share of each limit (1/{self.members})",
            )  # fmt: skip
            self._wake.set()

    def _back(self, members: int) -> None:
        self.members = members
        if not self.up:
            self.up = True
            self.last_error = None
            log.warning("shared state (%s) reachable again: shared admission resumed", self.kind)

    # -- admission ---------------------------------------------------------------------------

    async def take(
        self, lease: str, claims: Sequence[Claim], deployment: str | None = None
    ) -> Grant:
        """Take ``claims`` for ``lease`` in the store, or locally on shares during an outage."""
        now = trio.current_time()
        if self.up:
            try:
                grant = await self._call(self.store.take, lease, claims, self.ttl, deployment)
            except StoreUnavailable:
                pass
            else:
                if grant.refusal is None:
                    uncapped = [Claim(c.scope) for c in claims]
                    self.ledger.take(lease, uncapped, now)
                    self.leases[lease] = tuple(c.scope for c in claims)
                return grant
        if self.config.router.shared_state_outage == "closed":
            raise NoDeploymentAvailable(
                "shared state is unreachable and router_settings.shared_state_outage is "
                "closed: no new sessions until it is back",
                retry_after=RETRY_SECONDS,
            )
        shares = [
            Claim(c.scope, share(c.concurrent, self.members), share(c.per_minute, self.members))
            for c in claims
        ]
        refusal = self.ledger.take(lease, shares, now)
        if refusal is None:
            self.leases[lease] = tuple(c.scope for c in claims)
        return Grant(refusal)

    async def give_back(self, lease: str, started: bool) -> None:
        """End ``lease`` everywhere (shielded: a cancelled session still gives back)."""
        await self.give_back_many([(lease, started)])

    async def give_back_many(self, ends: Sequence[tuple[str, bool]]) -> None:
        """End each ``(lease, started)`` everywhere in one store call (shielded: a cancelled
        session still gives back; during an outage the store's copy expires instead)."""
        found: list[tuple[str, Sequence[str], bool]] = []
        for lease, started in ends:
            scopes = self.leases.pop(lease, None)
            self.ledger.give_back(lease, started=started)
            if scopes is not None:
                found.append((lease, scopes, started))
        if not found or not self.up:
            return
        with trio.CancelScope(shield=True):
            async with self._renewing:
                try:
                    await self._call(self.store.give_back_many, found)
                except StoreUnavailable:
                    pass

    async def end_trial(self, deployment: str, lease: str) -> None:
        if self.up:
            with trio.CancelScope(shield=True):
                try:
                    await self._call(self.store.end_trial, deployment, lease)
                except StoreUnavailable:
                    pass

    # -- health ------------------------------------------------------------------------------

    async def publish(self) -> None:
        """Send the ejections and restorations this process decided since the last time."""
        changes = self.pool.health_changes(self.published, trio.current_time())
        if not changes or not self.up:
            for dep_id, _, _ in changes:
                self.published.pop(dep_id, None)  # not sent: retried at the next renewal
            return
        with trio.CancelScope(shield=True):
            for index, (dep_id, seconds, level) in enumerate(changes):
                try:
                    if seconds < 0:
                        await self._call(self.store.restore, dep_id)
                    else:
                        await self._call(self.store.eject, dep_id, seconds, level)
                except StoreUnavailable:
                    for later, _, _ in changes[index:]:
                        self.published.pop(later, None)
                    return

    async def sync(self) -> None:
        """One renewal: extend leases, publish local verdicts, adopt everyone's."""
        async with self._renewing:
            members = await self._call(self.store.renew, dict(self.leases), self.ttl)
        self._back(members)
        await self.publish()
        verdicts = await self._call(self.store.verdicts, self.pool.deployment_ids())
        self.pool.adopt_verdicts(
            {v.deployment: (v.remaining, v.level) for v in verdicts}, trio.current_time()
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew until cancelled (the server runs this)."""
        try:
            await self.sync()
        except StoreUnavailable:
            pass
        task_status.started()
        while True:
            delay = self.ttl / 3 if self.up else RETRY_SECONDS
            with trio.move_on_after(delay):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.sync()
            except StoreUnavailable:
                pass

    async def view(self) -> SharedView:
        return await self._call(self.store.view)

    def describe(self) -> dict[str, object]:
        """For ``/health/readiness``."""
        return {
            "kind": self.kind,
            "up": self.up,
            "members": self.members,
            "outage_mode": self.config.router.shared_state_outage,
            "error": self.last_error,
            "leases": len(self.leases),
        }
