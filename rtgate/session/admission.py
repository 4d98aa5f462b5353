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

The accounting itself is pure (:mod:`rtgate.pool.quota`).
"""

from __future__ import annotations

import attrs
import trio

from rtgate.config.model import GatewayConfig
from rtgate.errors import TooManySessions
from rtgate.pool.quota import Claim, Ledger, Refusal
from rtgate.session.auth import Principal
from rtgate.session.counters import RelayCounters

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

    def reconfigure(self, config: GatewayConfig) -> None:
        """New limits apply to new sessions; held slots stay counted."""
        self.config = config

    async def admit(self, principal: Principal, lease: str) -> Ticket:
        """Take the session's slots or raise :class:`TooManySessions` (429) holding none."""
        refusal = self.ledger.take(
            lease, session_claims(self.config, principal), trio.current_time()
        )
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

    def start(self) -> None:
        self.started = True

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.admission.ledger.give_back(self.lease, started=self.started)
