"""One deployment's load and health as the pool tracks it (pure; time is an argument).

Health follows Envoy's outlier detection, reduced to what a realtime gateway
observes (consecutive failures, no success-rate sweeps)::

    closed --allowed_fails in a row / auth / 429--> ejected (cooldown)
    ejected --cooldown over--> half-open (one trial session or probe at a time)
    half-open --trial connects--> closed (on probation for early_failure_seconds)
    half-open --trial fails--> ejected, longer

Two failure streaks are kept apart on purpose: connect failures are reset by
the next successful connect, but sessions that die right after connecting are
reset only by a session that lives (or ends cleanly). Otherwise a deployment
that accepts every upgrade and drops every session a second later would never
be ejected, since each connect would wipe the previous early close.

Whether an ejection is allowed (``max_ejection_percent``) is a group question;
the pool answers it and passes ``may_eject`` in.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque

import attrs

from rtgate.config.model import Deployment, RouterSettings

log = logging.getLogger("rtgate.pool")

RPM_WINDOW_SECONDS = 60.0
BUSY_RETRY_SECONDS = 1.0
"""Advice to a client refused for concurrency: sessions end at no predictable time."""
HANDSHAKE_EWMA_ALPHA = 0.2

EARLY_CLOSE = "early_close"
"""Failure kind of a session that ended abnormally within ``early_failure_seconds``."""


class Phase(enum.Enum):
    CLOSED = "closed"
    EJECTED = "ejected"
    HALF_OPEN = "half-open"


class Gate(enum.Enum):
    """Whether a deployment can take a new session right now, and if not why."""

    OPEN = "open"
    TRIAL = "trial"
    """Half-open and free: the next session is its trial."""
    COOLING = "cooling"
    """Ejected, or half-open with its trial already running."""
    BUSY = "busy"
    """At ``max_parallel_requests`` or ``rpm``."""


@attrs.define(eq=False)
class DeploymentState:
    """Mutable bookkeeping for one :class:`Deployment` (identity: ``deployment.id``)."""

    deployment: Deployment
    int_weight: int = 1
    """Weight scaled to an integer together with its group (0: standby)."""
    current_weight: int = 0
    """Running value of smooth weighted round-robin."""

    active: int = 0
    """Reserved dials plus live sessions."""
    warm_idle: int = 0
    """Warm connections open and waiting for a session (``warm_pool``)."""
    warm_dialing: int = 0
    """Warm dials in flight. Idle plus dialing warm connections count against
    ``max_parallel_requests`` when the warm pool grows, never when a session arrives
    (the session takes one, or one is closed to make room: :meth:`Pool.warm_excess`)."""
    recent_starts: deque[float] = attrs.field(factory=deque)
    """Start times of dials within the last minute (for ``rpm``)."""
    last_activity: float = -math.inf
    """Last dial or probe: a deployment idle longer than its interval gets probed."""

    phase: Phase = Phase.CLOSED
    cooldown_until: float = 0.0
    trial_in_flight: bool = False
    probe_in_flight: bool = False
    probation_until: float = -math.inf
    connect_failures: int = 0
    early_closes: int = 0
    ejections: int = 0
    """Ejections since the process started (a counter for metrics)."""
    ejection_level: int = 0
    """Consecutive ejections without a long healthy spell: the cooldown doubles with each."""
    restored_at: float | None = None
    ejection_suppressed: bool = False
    """An ejection was refused by max_ejection_percent (logged once per episode)."""
    last_error: str | None = None
    last_error_at: float | None = None
    handshake_ewma: float | None = None
    verdict_serial: int = 0
    """Bumped by each ejection and restoration decided here (what shared state publishes)."""
    shared_verdict: bool = False
    """The current ejection was adopted from another process (shared state), not decided here."""

    @property
    def id(self) -> str:
        return self.deployment.id

    def describe(self) -> str:
        dep = self.deployment
        return f"deployment {dep.id} ({dep.provider}/{dep.model}) of {dep.model_name!r}"

    # -- load -------------------------------------------------------------

    def refresh(self, now: float) -> None:
        """Apply the passage of time: an ejection whose cooldown is over turns half-open."""
        if self.phase is Phase.EJECTED and now >= self.cooldown_until:
            self.phase = Phase.HALF_OPEN
            log.info("%s: cooldown over, half-open (next session is a trial)", self.describe())
        window_start = now - RPM_WINDOW_SECONDS
        while self.recent_starts and self.recent_starts[0] <= window_start:
            self.recent_starts.popleft()

    def gate(self, now: float) -> Gate:
        self.refresh(now)
        if self.phase is Phase.EJECTED or (self.phase is Phase.HALF_OPEN and self.trial_in_flight):
            return Gate.COOLING
        if self.busy_retry_after(now) is not None:
            return Gate.BUSY
        return Gate.TRIAL if self.phase is Phase.HALF_OPEN else Gate.OPEN

    def busy_retry_after(self, now: float) -> float | None:
        """Seconds until a slot is likely free, or None when there is one now."""
        dep = self.deployment
        waits: list[float] = []
        if dep.max_parallel_requests is not None and self.active >= dep.max_parallel_requests:
            waits.append(BUSY_RETRY_SECONDS)
        if dep.rpm is not None and len(self.recent_starts) >= dep.rpm and not self.warm_idle:
            # (An idle warm connection's start is already counted: taking it starts nothing.)
            # The slot frees when the start that is rpm-th from the end leaves the window.
            oldest_counted = self.recent_starts[len(self.recent_starts) - dep.rpm]
            waits.append(max(oldest_counted + RPM_WINDOW_SECONDS - now, 0.001))
        return max(waits) if waits else None

    def cooldown_remaining(self, now: float) -> float:
        return max(self.cooldown_until - now, 0.0) if self.phase is Phase.EJECTED else 0.0

    def cooling_retry_after(self, now: float) -> float:
        """Seconds until a cooling deployment may take a session (trial running: a guess)."""
        if self.phase is Phase.EJECTED:
            return max(self.cooldown_until - now, 0.001)
        return BUSY_RETRY_SECONDS

    def reserve(self, now: float) -> None:
        """A dial is about to start: count it against capacity, claim the trial if half-open."""
        self.active += 1
        self.recent_starts.append(now)
        self.last_activity = now
        if self.phase is Phase.HALF_OPEN:
            self.trial_in_flight = True

    def release(self) -> None:
        """A reserved dial was abandoned (or a session ended): free its slot."""
        self.active = max(self.active - 1, 0)

    # -- health -----------------------------------------------------------

    def record_success(
        self, now: float, handshake_seconds: float | None, reason: str, settings: RouterSettings
    ) -> None:
        """A connect (or probe) succeeded; a half-open deployment is restored."""
        self.connect_failures = 0
        self.ejection_suppressed = False
        if handshake_seconds is not None:
            if self.handshake_ewma is None:
                self.handshake_ewma = handshake_seconds
            else:
                self.handshake_ewma += HANDSHAKE_EWMA_ALPHA * (
                    handshake_seconds - self.handshake_ewma
                )
        if self.phase is Phase.HALF_OPEN:
            self._restore(now, reason, settings.early_failure_seconds)

    def record_session_end(
        self,
        now: float,
        *,
        abnormal: bool,
        duration: float,
        settings: RouterSettings,
        may_eject: bool,
    ) -> None:
        self.release()
        if abnormal and duration < settings.early_failure_seconds:
            self.record_failure(now, EARLY_CLOSE, None, settings, may_eject)
        else:
            self.early_closes = 0

    def record_failure(
        self,
        now: float,
        kind: str,
        retry_after: float | None,
        settings: RouterSettings,
        may_eject: bool,
    ) -> None:
        """A connect, probe or young session failed; eject if the rules say so."""
        self.refresh(now)
        self.last_error = kind
        self.last_error_at = now
        if kind == EARLY_CLOSE:
            self.early_closes += 1
        else:
            self.connect_failures += 1
        if self.phase is Phase.EJECTED:
            # A dial that started before the ejection and failed after it: the
            # deployment is already cooling; re-ejecting would stretch the
            # cooldown once per dial that happened to be in flight.
            return
        decision = self._ejection_for(now, kind, retry_after, settings)
        if decision is None:
            return
        level, seconds, reason = decision
        if self.phase is not Phase.HALF_OPEN and not may_eject:
            # Envoy's max_ejection_percent: better to keep dialing a failing
            # deployment than to leave the group with too few to serve anyone.
            if not self.ejection_suppressed:
                self.ejection_suppressed = True
                log.warning(
                    "%s: would be ejected (%s) but max_ejection_percent=%g is reached; "
                    "kept in rotation (panic mode)",
                    self.describe(), reason, settings.max_ejection_percent,
                )  # fmt: skip
            return
        self._eject(now, level, seconds, reason)

    def _ejection_for(
        self, now: float, kind: str, retry_after: float | None, settings: RouterSettings
    ) -> tuple[int, float, str] | None:
        """(ejection level after it, cooldown seconds, reason) if this failure ejects."""
        if kind == "auth":
            # 401/403 do not heal by themselves; someone has to fix the key.
            reason = "upstream refused the credentials"
            return self.ejection_level, settings.auth_cooldown_time, reason
        if kind == "throttled":
            # The provider says when; its hint is not a health verdict, so no growth.
            seconds = settings.cooldown_time if retry_after is None else retry_after
            seconds = min(max(seconds, 0.0), settings.cooldown_max)
            return (
                self.ejection_level,
                seconds,
                f"throttled by the provider (retry after {seconds:g}s)",
            )
        if self.phase is Phase.HALF_OPEN:
            reason = f"trial failed ({kind})"
        elif now < self.probation_until:
            reason = f"failed again right after recovering ({kind})"
        elif self.connect_failures >= settings.allowed_fails:
            reason = f"{self.connect_failures} consecutive connect failures (last: {kind})"
        elif self.early_closes >= settings.allowed_fails:
            reason = f"{self.early_closes} consecutive sessions closed abnormally at once"
        else:
            return None
        level = self.ejection_level
        if self.restored_at is not None and now - self.restored_at >= settings.cooldown_max:
            level = 0  # healthy long enough: forgive the past ejections
        seconds = min(settings.cooldown_time * 2.0**level, settings.cooldown_max)
        return level + 1, seconds, reason

    def _eject(self, now: float, level: int, seconds: float, reason: str) -> None:
        self.verdict_serial += 1
        self.shared_verdict = False
        self.phase = Phase.EJECTED
        self.ejection_level = level
        self.cooldown_until = now + seconds
        self.trial_in_flight = False
        self.ejection_suppressed = False
        self.probation_until = -math.inf
        self.ejections += 1
        log.warning("%s: ejected for %gs: %s", self.describe(), seconds, reason)

    def _restore(self, now: float, reason: str, probation_seconds: float) -> None:
        self.verdict_serial += 1
        self.shared_verdict = False
        self.phase = Phase.CLOSED
        self.trial_in_flight = False
        self.connect_failures = 0
        self.early_closes = 0
        self.restored_at = now
        # One more failure while on probation ejects again at once (and longer).
        self.probation_until = now + probation_seconds
        log.info("%s: back in rotation: %s", self.describe(), reason)

    def adopt_verdict(self, now: float, remaining: float, level: int) -> None:
        """Another process ejected this deployment: cool down with it for ``remaining``
        seconds (0: half-open now). A trial running here decides for itself."""
        self.refresh(now)
        self.ejection_level = max(self.ejection_level, level)
        if self.trial_in_flight:
            return
        until = now + max(remaining, 0.0)
        if self.phase is Phase.EJECTED and self.cooldown_until >= until:
            return
        if self.phase is Phase.HALF_OPEN and remaining <= 0:
            return
        if self.phase is Phase.CLOSED:
            log.warning("%s: ejected by another rtgate process (%gs left)", self.describe(),
                        remaining)  # fmt: skip
        self.phase = Phase.EJECTED
        self.cooldown_until = until
        self.probation_until = -math.inf
        self.shared_verdict = True
        self.refresh(now)

    def adopt_restore(self, now: float) -> None:
        """The shared record of an adopted ejection is gone: another process restored it."""
        if self.shared_verdict and self.phase is not Phase.CLOSED and not self.trial_in_flight:
            self.phase = Phase.CLOSED
            self.shared_verdict = False
            self.connect_failures = 0
            self.early_closes = 0
            self.restored_at = now
            log.info("%s: back in rotation (restored by another rtgate process)", self.describe())

    def reset_health(self) -> None:
        """Forget health history (the deployment's definition changed on reload)."""
        self.phase = Phase.CLOSED
        self.cooldown_until = 0.0
        self.trial_in_flight = False
        self.probation_until = -math.inf
        self.connect_failures = 0
        self.early_closes = 0
        self.ejection_level = 0
        self.restored_at = None
        self.ejection_suppressed = False
