"""Admission: every slot a session needs, taken before its dial, given back exactly once.

A handshake calls :meth:`Admission.admit` after authentication and before the
pool walk; it takes the gateway's ``rtgate.limits.max_sessions`` slot and the
key's ``max_sessions`` slot and ``rpm_limit`` place in one step (all or none),
under the session's id as lease. Deployment slots (``max_parallel_requests``,
``rpm``) are reserved by the pool's :class:`rtgate.pool.router.Selection` for
each candidate as it is dialed. The :class:`Ticket` gives the gateway and key
slots back on every path: dial failed, dial cancelled (client gone, shutdown),
client handshake failed, session ended. A session that never reached its
upstream also gives back its place in the key's minute window: the client got
no session, so it did not use one of its requests per minute.

The accounting itself is pure (:mod:`rtgate.pool.quota`). With shared state
(``--workers``, Redis: :mod:`rtgate.session.shared_state`) the store decides
instead, for every process at once, and the deployment slots are claimed in
the store too (:meth:`Ticket.claim_deployment`), each as its own lease.
"""

from __future__ import annotations

import attrs
import trio

from rtgate.config.model import Deployment, GatewayConfig
from rtgate.errors import TooManySessions
from rtgate.pool.quota import Claim, Ledger, Refusal
from rtgate.session.auth import Principal
from rtgate.session.counters import RelayCounters
from rtgate.session.shared_state import SharedState
from rtgate.shared.store import Grant, deployment_scope

GRANTED = Grant(None)

GATEWAY_SCOPE = "gateway"
KEY_SCOPE_PREFIX = "key:"


def key_scope(alias: str) -> str:
    return KEY_SCOPE_PREFIX + alias


def session_claims(config: GatewayConfig, principal: Principal) -> list[Claim]:
    """The gateway and key limits a session of ``principal`` must fit under."""
    claims = [Claim(GATEWAY_SCOPE, concurrent=config.server.limits.max_sessions)]
    if principal.alias is not None:
        claims.append(
            Claim(
                key_scope(principal.alias),
                concurrent=principal.max_sessions,
                per_minute=principal.rpm_limit,
            )
        )
    return claims


def refusal_error(refusal: Refusal) -> TooManySessions:
    """The client's 429 for a refusal (never names the key: the client knows which it sent)."""
    if refusal.scope == GATEWAY_SCOPE:
        message = "the gateway is at its session limit"
    elif refusal.cap == "per_minute":
        message = "this key is at its sessions-per-minute limit (rpm_limit)"
    else:
        message = "this key is at its concurrent session limit"
    return TooManySessions(message, retry_after=refusal.retry_after)


def limit_word(refusal: Refusal) -> str:
    """The ``rtgate_limit_closes_total{limit}`` word of a refusal."""
    if refusal.scope == GATEWAY_SCOPE:
        return "max_sessions"
    return "rpm_limit_per_key" if refusal.cap == "per_minute" else "max_sessions_per_key"


class Admission:
    """The gateway's and keys' slots of this process (see module docstring)."""

    def __init__(self, config: GatewayConfig, counters: RelayCounters) -> None:
        self.config = config
        self.counters = counters
        self.ledger = Ledger()
        self.shared: SharedState | None = None
        """Set by the server when a store is configured (then the store decides)."""

    def reconfigure(self, config: GatewayConfig) -> None:
        """New limits apply to new sessions; held slots stay counted."""
        self.config = config
        if self.shared is not None:
            self.shared.reconfigure(config)

    async def admit(self, principal: Principal, lease: str) -> Ticket:
        """Take the session's slots or raise :class:`TooManySessions` (429) holding none."""
        claims = session_claims(self.config, principal)
        if self.shared is None:
            refusal = self.ledger.take(lease, claims, trio.current_time())
        else:
            refusal = (await self.shared.take(lease, claims)).refusal
        if refusal is not None:
            self.counters.limit(limit_word(refusal))
            raise refusal_error(refusal)
        return Ticket(self, lease)

    def sessions_by_key(self) -> dict[str, int]:
        """Held slots per key alias (dials in flight and live sessions)."""
        return self.ledger.active_by_prefix(KEY_SCOPE_PREFIX)

    def held(self) -> int:
        """Held gateway slots (dials in flight and live sessions)."""
        return self.ledger.active(GATEWAY_SCOPE)


@attrs.define(eq=False)
class Ticket:
    """One session's slots; :meth:`release` gives them back (once, whatever calls it)."""

    admission: Admission
    lease: str
    started: bool = False
    """The session reached its upstream (its minute-window places stay used)."""
    released: bool = False
    deployments: dict[str, str] = attrs.field(factory=dict)
    """Shared state only: deployment id -> the lease of this session's slot on it."""
    trials: set[str] = attrs.field(factory=set)
    """Deployments whose shared half-open trial this session holds."""

    def start(self) -> None:
        self.started = True

    async def claim_deployment(self, dep: Deployment) -> Grant:
        """Shared state only: a slot on ``dep`` for every process's limits and health
        (without a store the pool's reservation is the whole claim)."""
        shared = self.admission.shared
        if shared is None:
            return GRANTED
        lease = f"{self.lease}@{dep.id}"
        claim = Claim(deployment_scope(dep.id), dep.max_parallel_requests, dep.rpm)
        grant = await shared.take(lease, [claim], deployment=dep.id)
        if grant.refusal is None:
            self.deployments[dep.id] = lease
            if grant.trial:
                self.trials.add(dep.id)
        return grant

    async def drop_deployment(self, dep: Deployment) -> None:
        """The dial of ``dep`` failed or was abandoned: give its slot (and trial) back."""
        shared = self.admission.shared
        lease = self.deployments.pop(dep.id, None)
        if shared is None or lease is None:
            return
        if dep.id in self.trials:
            self.trials.discard(dep.id)
            await shared.end_trial(dep.id, lease)
        await shared.give_back(lease, started=True)  # the upstream saw the attempt (rpm)

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        shared = self.admission.shared
        if shared is None:
            self.admission.ledger.give_back(self.lease, started=self.started)
            return
        for dep_id, lease in list(self.deployments.items()):
            if dep_id in self.trials:
                await shared.end_trial(dep_id, lease)
        # The session's lease and its deployment's go back in one store call.
        ends = [(lease, True) for lease in self.deployments.values()]
        self.deployments.clear()
        await shared.give_back_many([*ends, (self.lease, self.started)])
