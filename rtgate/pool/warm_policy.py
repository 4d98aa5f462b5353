"""Warm pool decisions, without I/O: validation, refill backoff, recycling, idle frames.

Pure: no trio, no sockets; time is an argument. :mod:`rtgate.session.warm_pool` does
the dialing and watching and asks this module what to do. Capacity (how many
warm connections a deployment may hold next to its sessions) is the pool's
question: :meth:`rtgate.pool.router.Pool.claim_warm_dial` and friends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import orjson

from rtgate.config.model import Deployment, WarmPoolSettings
from rtgate.wire import Binary

VERTEX_MAX_IDLE_SECONDS = 240.0
"""A Vertex access token is replaced when less than 300 s of it remain
(``google_auth.REFRESH_MARGIN``), so a dial always carries one valid for >= 300 s;
a warm connection handed out before this age still has a live token (60 s spare)."""

YOUNG_DEATH_SECONDS = 10.0
"""An idle connection the upstream closes sooner than this (or than half its
``max_idle_seconds``) counts as a failed refill: the upstream may be shedding idle
sockets, so refilling backs off instead of redialing at once, forever."""

MAX_IDLE_FRAMES = 64
"""Events an idle connection may collect before the client arrives (xAI's ``ping``
events, for example); more means something is wrong with it."""

DISCARDING_EVENTS = frozenset({b"error", b"goAway"})
"""Event kinds that end an idle connection's usefulness: an ``error`` (OpenAI shape),
Gemini's ``goAway`` (the connection ends soon)."""


def settings_problems(dep: Deployment, warmable: bool) -> list[str]:
    """Why ``dep.warm_pool`` cannot be honoured (human sentences; empty: fine)."""
    warm = dep.warm_pool
    if warm is None:
        return []
    problems: list[str] = []
    if not warmable:
        problems.append(
            f"warm_pool is not available for {dep.provider}/ deployments: only WebSocket "
            "providers (openai, azure, xai, gemini, vertex_ai) can be pre-opened"
            + (
                " (a Bedrock session is one HTTP/2 stream signed for its own request)"
                if dep.provider == "bedrock"
                else " (mock/ runs in-process: there is nothing to dial)"
                if dep.provider == "mock"
                else ""
            )
        )
    cap = dep.max_parallel_requests
    if cap is not None and warm.size > cap:
        problems.append(
            f"warm_pool.size ({warm.size}) is larger than max_parallel_requests ({cap}): "
            "warm connections count against it"
        )
    if dep.provider == "vertex_ai" and warm.max_idle_seconds > VERTEX_MAX_IDLE_SECONDS:
        problems.append(
            f"warm_pool.max_idle_seconds must be <= {VERTEX_MAX_IDLE_SECONDS:g} for vertex_ai "
            "(a warm connection must not outlive the access token it was opened with)"
        )
    if warm.refill_delay_max_seconds < warm.refill_delay_seconds:
        problems.append("warm_pool.refill_delay_max_seconds must be >= refill_delay_seconds")
    return problems


@attrs.define
class RefillBackoff:
    """When the next warm dial of one deployment may start, after failures."""

    failures: int = 0
    not_before: float = -math.inf

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    def failed(self, now: float, settings: WarmPoolSettings) -> None:
        self.failures += 1
        delay = settings.refill_delay_seconds * 2.0 ** (self.failures - 1)
        self.not_before = now + min(delay, settings.refill_delay_max_seconds)

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = -math.inf


def recycle_at(dialed_at: float, dial_seconds: float, settings: WarmPoolSettings) -> float:
    """When to start dialing a replacement for a connection dialed at ``dialed_at``.

    Early enough that the replacement is ready before the old one expires
    (twice its own dial time plus half a second), never earlier than three
    quarters of its life.
    """
    lead = min(2.0 * dial_seconds + 0.5, settings.max_idle_seconds / 4.0)
    return dialed_at + settings.max_idle_seconds - lead


def dials_wanted(size: int, fresh_idle: int, dialing: int) -> int:
    """Warm dials to start so ``size`` fresh connections will be idle."""
    return max(size - fresh_idle - dialing, 0)


def is_young_death(age: float, settings: WarmPoolSettings) -> bool:
    return age < min(YOUNG_DEATH_SECONDS, settings.max_idle_seconds / 2.0)


def idle_frames_problem(frames: Sequence[object], already_held: int) -> str | None:
    """Why frames received on an idle connection make it unusable (None: keep them).

    Kept frames are handed to the client first (``first_frames``), exactly as if
    they had arrived during its own session.
    """
    if already_held + len(frames) > MAX_IDLE_FRAMES:
        return "overflow"
    for frame in frames:
        data = frame.data if isinstance(frame, Binary) else frame  # Gemini: binary JSON
        if isinstance(data, bytes) and _kind(data) in DISCARDING_EVENTS:
            return "error_event"
    return None


def _kind(frame: bytes) -> bytes | None:
    """The event's ``type`` (OpenAI shape) or its first key (Gemini shape)."""
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    if isinstance(kind, str):
        return kind.encode()
    first = next(iter(event), None)
    return first.encode() if isinstance(first, str) else None
