"""The deployment pool: which deployment serves the next session, and which to avoid.

Pure: no trio, no sockets; every method that depends on time takes ``now``
(seconds on the relay's clock, ``trio.current_time()``).

The relay walks one :class:`Selection` per client handshake::

    sel = pool.select("gpt-realtime", now)        # UnknownModel if no such group
    while (dep := sel.next(now)) is not None:     # reserves a session slot on dep
        try: link = await dial(dep)
        except UpstreamConnectError as e:
            sel.failed(dep, now, e.kind, e.retry_after)   # slot released, health updated
            continue
        except BaseException:
            sel.release(dep, now)                  # cancelled: slot freed, health untouched
            raise
        sel.succeeded(dep, now, handshake_seconds)       # the slot is now a live session
        break
    else:
        raise sel.exhausted()                     # NoDeploymentAvailable / AllDeploymentsBusy
    ...
    pool.session_ended(dep, now, abnormal=..., duration=...)

Every ``model_name`` is a group. Within a group the first deployment comes
from ``router_settings.routing_strategy`` among those that can take a session
now (nginx's smooth weighted round-robin by default; ``least-busy``;
``simple-shuffle``), failover continues through the rest of the group in file
order after it, weight-0 (standby) deployments last, then the groups named in
``router_settings.fallbacks``. Health (cooldowns, half-open trials) lives in
:mod:`rtgate.pool.state`; the group rule that caps ejections
(``max_ejection_percent``) lives here.

Active health checks (:mod:`rtgate.session.health_checks`) ask
:meth:`Pool.claim_health_checks` what to dial and report back with
:meth:`Pool.report_probe`.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque

import attrs

from rtgate.config.model import Deployment, GatewayConfig, RouterSettings
from rtgate.errors import AllDeploymentsBusy, NoDeploymentAvailable, UnknownModel
from rtgate.pool.state import DeploymentState, Gate, Phase
from rtgate.pool.strategy import integer_weights, smooth_wrr_pick

log = logging.getLogger("rtgate.pool")

_USABLE = (Gate.OPEN, Gate.TRIAL)


class Selection:
    """One handshake's walk over candidate deployments (see module docstring)."""

    def __init__(self, pool: Pool, group: str, now: float) -> None:
        self._pool = pool
        self._group = group
        self._fallbacks: deque[str] = deque(pool.fallback_groups(group))
        self._queue: deque[DeploymentState] = deque(pool._order(group, now))
        self._attempts_left = pool._attempt_limit(group)
        self._outstanding: dict[str, DeploymentState] = {}
        self._trials: set[str] = set()
        self._tried = 0
        self._busy_wait: float | None = None
        self._cooling_wait: float | None = None

    def next(self, now: float) -> Deployment | None:
        """Reserve and return the next deployment to dial, or None when none is left."""
        while True:
            if self._attempts_left > 0:
                while self._queue:
                    state = self._queue.popleft()
                    gate = state.gate(now)
                    if gate is Gate.BUSY:
                        self._busy_wait = _min(self._busy_wait, state.busy_retry_after(now))
                    elif gate is Gate.COOLING:
                        self._cooling_wait = _min(
                            self._cooling_wait, state.cooling_retry_after(now)
                        )
                    else:
                        return self._take(state, gate, now)
            if not self._fallbacks:
                return None
            group = self._fallbacks.popleft()
            self._queue = deque(self._pool._order(group, now))
            self._attempts_left = self._pool._attempt_limit(group)

    def _take(self, state: DeploymentState, gate: Gate, now: float) -> Deployment:
        state.reserve(now)
        self._attempts_left -= 1
        self._tried += 1
        self._outstanding[state.id] = state
        if gate is Gate.TRIAL:
            self._trials.add(state.id)
        return state.deployment

    def _settle(self, dep: Deployment) -> DeploymentState | None:
        self._trials.discard(dep.id)
        return self._outstanding.pop(dep.id, None)

    def failed(
        self, dep: Deployment, now: float, kind: str, retry_after: float | None = None
    ) -> None:
        """Dialing ``dep`` failed: its slot is released and its health learns ``kind``."""
        state = self._settle(dep)
        if state is None:
            return
        state.release()
        state.record_failure(
            now, kind, retry_after, self._pool.settings, self._pool._may_eject(state)
        )

    def succeeded(self, dep: Deployment, now: float, handshake_seconds: float) -> None:
        """``dep`` is connected: its slot is now a live session (end it with ``session_ended``)."""
        state = self._settle(dep)
        if state is not None:
            state.record_success(now, handshake_seconds, "trial session connected",
                                 self._pool.settings)  # fmt: skip

    def release(self, dep: Deployment, now: float) -> None:
        """The dial was abandoned (cancelled, client gone): free the slot, judge nothing."""
        was_trial = dep.id in self._trials
        state = self._settle(dep)
        if state is None:
            return
        state.release()
        if was_trial and state.phase is Phase.HALF_OPEN:
            state.trial_in_flight = False

    def refused(self, dep: Deployment, now: float, retry_after: float, *, cooling: bool) -> None:
        """Shared state refused ``dep`` (busy elsewhere, or cooling for everyone): free the
        slot, judge nothing, and count it as not tried."""
        was_trial = dep.id in self._trials
        state = self._settle(dep)
        if state is None:
            return
        state.release()
        if was_trial and state.phase is Phase.HALF_OPEN:
            state.trial_in_flight = False
        self._tried -= 1
        if cooling:
            self._cooling_wait = _min(self._cooling_wait, retry_after)
        else:
            self._busy_wait = _min(self._busy_wait, retry_after)

    def begin_trial(self, dep: Deployment, now: float) -> None:
        """Shared state handed this reservation the deployment's one half-open trial."""
        state = self._outstanding.get(dep.id)
        if state is None:
            return
        state.refresh(now)
        if state.phase is not Phase.HALF_OPEN:
            state.phase = Phase.HALF_OPEN
        state.trial_in_flight = True
        self._trials.add(dep.id)

    def is_trial(self, dep: Deployment) -> bool:
        """Is this reservation of ``dep`` its half-open trial? (A trial always dials fresh.)"""
        return dep.id in self._trials

    def adopted(self, dep: Deployment) -> None:
        """``dep``'s slot became a live session on a warm connection (no dial to judge)."""
        self._settle(dep)

    def exhausted(self) -> NoDeploymentAvailable:
        """The error to give the client once :meth:`next` returned None."""
        group = self._group
        if self._tried == 0 and self._busy_wait is not None:
            retry = min(self._busy_wait, self._cooling_wait or math.inf)
            return AllDeploymentsBusy(f"every deployment of {group!r} is at capacity", retry)
        if self._tried == 0 and self._cooling_wait is not None:
            return NoDeploymentAvailable(
                f"every deployment of {group!r} is cooling down after failures",
                self._cooling_wait,
            )
        return NoDeploymentAvailable(
            f"no deployment of {group!r} could take the session ({self._tried} tried, all failed)",
            self._cooling_wait,
        )


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def dial_identity(dep: Deployment) -> Deployment:
    """The deployment without its routing knobs (and warm pool settings): what a dial
    depends on. A change here resets health, and warm connections, on reload."""
    return attrs.evolve(
        dep,
        weight=1.0,
        max_parallel_requests=None,
        rpm=None,
        health_check_interval=None,
        warm_pool=None,
    )


class Pool:
    """Every deployment's load and health, and the routing decisions made from them."""

    def __init__(self, config: GatewayConfig, *, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._states: dict[str, DeploymentState] = {}
        self._retired: dict[str, DeploymentState] = {}
        """Removed by a reload but still holding sessions: kept until they end."""
        self._groups: dict[str, list[DeploymentState]] = {}
        self._config = config
        self._install(config)

    @property
    def config(self) -> GatewayConfig:
        return self._config

    @property
    def settings(self) -> RouterSettings:
        return self._config.router

    # -- configuration --------------------------------------------------------

    def _install(self, config: GatewayConfig) -> None:
        states: dict[str, DeploymentState] = {}
        for dep in config.deployments:
            # A deployment removed and added back finds its sessions still counted.
            state = self._states.get(dep.id) or self._retired.get(dep.id)
            if state is None:
                state = DeploymentState(dep)
            elif dial_identity(state.deployment) != dial_identity(dep):
                state.reset_health()
                log.info("deployment %s of %r changed: health history reset", dep.id,
                         dep.model_name)  # fmt: skip
            state.deployment = dep
            states[dep.id] = state
        groups: dict[str, list[DeploymentState]] = {}
        for state in states.values():
            groups.setdefault(state.deployment.model_name, []).append(state)
        for members in groups.values():
            weights = integer_weights([s.deployment.weight for s in members])
            if [s.int_weight for s in members] != weights:
                # Another membership or ratio: restart the round-robin cycle cleanly.
                for state, weight in zip(members, weights, strict=True):
                    state.int_weight = weight
                    state.current_weight = 0
        self._config = config
        self._states = states
        self._groups = groups

    def reconfigure(self, config: GatewayConfig, now: float) -> None:
        """Adopt a reloaded config, keeping the load and health of every kept deployment.

        Identity is ``Deployment.id``. A deployment whose connection settings
        changed (key, base, model...) starts with a clean health record; one
        whose weight or caps changed keeps it. Removed deployments keep
        counting their running sessions until those end.
        """
        kept = {d.id for d in config.deployments}
        for dep_id, state in self._states.items():
            if dep_id not in kept:
                log.info("%s: removed from the configuration", state.describe())
                if state.active > 0:
                    self._retired[dep_id] = state
        known = set(self._states)
        self._install(config)
        for dep_id, state in self._states.items():
            self._retired.pop(dep_id, None)
            if dep_id not in known:
                log.info("%s: added", state.describe())

    def groups(self) -> dict[str, tuple[Deployment, ...]]:
        return {
            name: tuple(s.deployment for s in members) for name, members in self._groups.items()
        }

    def fallback_groups(self, group: str) -> list[str]:
        """The configured fallbacks of ``group`` that exist (never itself)."""
        targets = self.settings.fallbacks.get(group, ())
        return [g for g in dict.fromkeys(targets) if g != group and g in self._groups]

    # -- routing ----------------------------------------------------------------

    def select(self, group: str, now: float) -> Selection:
        """Start a handshake's walk over ``group`` (then its fallbacks)."""
        if group not in self._groups:
            raise UnknownModel(f"model {group!r} is not served here")
        return Selection(self, group, now)

    def _attempt_limit(self, group: str) -> int:
        size = len(self._groups[group])
        retries = self.settings.num_retries
        return size if retries is None else min(1 + max(retries, 0), size)

    def _order(self, group: str, now: float) -> list[DeploymentState]:
        """``group``'s deployments in dial order: the strategy's pick, the rest, standby last."""
        members = self._groups[group]
        weighted = [s for s in members if s.int_weight > 0]
        standby = [s for s in members if s.int_weight == 0]
        eligible = [s for s in weighted if s.gate(now) in _USABLE]
        if eligible:
            pick: DeploymentState | None = self._pick(eligible)
        else:
            pick = next((s for s in standby if s.gate(now) in _USABLE), None)
        if pick is None:
            return weighted + standby
        if pick in weighted:
            at = weighted.index(pick)
            weighted = weighted[at:] + weighted[:at]
        return [pick] + [s for s in weighted + standby if s is not pick]

    def _pick(self, eligible: list[DeploymentState]) -> DeploymentState:
        strategy = self.settings.routing_strategy
        if strategy == "least-busy":
            return min(eligible, key=lambda s: (s.active, -s.int_weight))
        if strategy == "simple-shuffle":
            return self._rng.choices(eligible, weights=[s.int_weight for s in eligible])[0]
        current = [s.current_weight for s in eligible]
        index = smooth_wrr_pick([s.int_weight for s in eligible], current)
        for state, value in zip(eligible, current, strict=True):
            state.current_weight = value
        return eligible[index]

    def _may_eject(self, state: DeploymentState) -> bool:
        """max_ejection_percent: would ejecting ``state`` keep the group under the cap?"""
        members = self._groups.get(state.deployment.model_name, [])
        if state not in members:
            return True
        already = sum(1 for s in members if s is not state and s.phase is not Phase.CLOSED)
        allowed = math.floor(len(members) * self.settings.max_ejection_percent / 100 + 1e-9)
        return already + 1 <= allowed

    def _lookup(self, dep: Deployment) -> DeploymentState | None:
        return self._states.get(dep.id) or self._retired.get(dep.id)

    def session_ended(
        self, dep: Deployment, now: float, *, abnormal: bool, duration: float
    ) -> None:
        """A session that :meth:`Selection.succeeded` started has ended.

        An abnormal end within ``early_failure_seconds`` counts as a failure of
        the deployment (it accepted the upgrade, then could not serve).
        """
        state = self._lookup(dep)
        if state is None:
            return
        state.record_session_end(now, abnormal=abnormal, duration=duration,
                                 settings=self.settings, may_eject=self._may_eject(state))  # fmt: skip
        if dep.id in self._retired and state.active == 0:
            del self._retired[dep.id]

    # -- active health checks -----------------------------------------------------

    def _probe_interval(self, state: DeploymentState) -> float | None:
        interval = state.deployment.health_check_interval
        return interval if interval is not None else self.settings.health_check_interval

    def _probe_due_at(self, state: DeploymentState, now: float) -> float | None:
        interval = self._probe_interval(state)
        if interval is None or state.probe_in_flight:
            return None
        state.refresh(now)
        if state.phase is Phase.EJECTED:
            return state.cooldown_until  # probe the moment the cooldown ends, not before
        if state.phase is Phase.HALF_OPEN:
            return None if state.trial_in_flight else now
        if state.active > 0:
            return None  # live sessions already tell us how it is doing
        return state.last_activity + interval

    def claim_health_checks(self, now: float) -> list[Deployment]:
        """Deployments to probe now; each is marked in flight until :meth:`report_probe`.

        A half-open deployment is probed as soon as its cooldown ends (the probe
        is its trial, so no client pays for it); a healthy one when it has been
        idle (no dial, no probe) for its ``health_check_interval``. Never one
        that is cooling down.
        """
        claimed: list[Deployment] = []
        for state in self._states.values():
            due = self._probe_due_at(state, now)
            if due is None or due > now:
                continue
            state.probe_in_flight = True
            state.last_activity = now
            if state.phase is Phase.HALF_OPEN:
                state.trial_in_flight = True
            claimed.append(state.deployment)
        return claimed

    def next_health_check_at(self, now: float) -> float | None:
        """When the next probe falls due (None: nothing scheduled right now)."""
        times = [t for s in self._states.values() if (t := self._probe_due_at(s, now)) is not None]
        return min(times, default=None)

    def report_probe(
        self,
        dep: Deployment,
        now: float,
        ok: bool,
        kind: str | None = None,
        retry_after: float | None = None,
        handshake_seconds: float | None = None,
    ) -> None:
        """The probe of ``dep`` finished; a pass restores a half-open deployment."""
        state = self._lookup(dep)
        if state is None or not state.probe_in_flight:
            return
        state.probe_in_flight = False
        state.last_activity = now
        was_trial = state.phase is Phase.HALF_OPEN and state.trial_in_flight
        if ok:
            state.early_closes = 0
            state.record_success(now, handshake_seconds, "health check passed", self.settings)
            return
        state.record_failure(now, kind or "error", retry_after, self.settings,
                             self._may_eject(state))  # fmt: skip
        if was_trial and state.phase is Phase.HALF_OPEN:
            state.trial_in_flight = False

    def cancel_probe(self, dep: Deployment) -> None:
        """The probe of ``dep`` was abandoned (shutdown): free its claim, judge nothing."""
        state = self._lookup(dep)
        if state is None or not state.probe_in_flight:
            return
        state.probe_in_flight = False
        if state.phase is Phase.HALF_OPEN:
            state.trial_in_flight = False

    # -- warm connections (rtgate.session.warm_pool does the I/O) -------------------------------

    def _current(self, dep: Deployment) -> DeploymentState | None:
        """The state of ``dep`` if it is configured now exactly as given (not retired)."""
        state = self._states.get(dep.id)
        return state if state is not None and state.deployment == dep else None

    def may_keep_warm(self, dep: Deployment, now: float) -> bool:
        """May ``dep`` hold warm connections? Only while configured and healthy (closed
        phase): cooldowns and half-open trials stay exactly as they are without them."""
        state = self._current(dep)
        if state is None:
            return False
        state.refresh(now)
        return state.phase is Phase.CLOSED

    def claim_warm_dial(self, dep: Deployment, now: float) -> bool:
        """Reserve a warm dial of ``dep`` now, if health, capacity and rpm allow it.

        Capacity: sessions, reserved dials and every warm connection (idle or
        dialing) stay within ``max_parallel_requests``. A warm dial is a new
        upstream session for ``rpm``. Settle with :meth:`warm_dial_done` or
        :meth:`warm_dial_abandoned`.
        """
        state = self._current(dep)
        if state is None or not self.may_keep_warm(dep, now):
            return False
        cap = dep.max_parallel_requests
        if cap is not None and state.active + state.warm_idle + state.warm_dialing >= cap:
            return False
        if dep.rpm is not None and len(state.recent_starts) >= dep.rpm:
            return False
        state.warm_dialing += 1
        state.recent_starts.append(now)
        state.last_activity = now
        return True

    def warm_dial_done(
        self,
        dep: Deployment,
        now: float,
        *,
        ok: bool,
        handshake_seconds: float | None = None,
        kind: str = "error",
        retry_after: float | None = None,
    ) -> None:
        """A claimed warm dial ended: it is idle now (``ok``), or its failure is judged
        like any dial's (failures in a row, cooldowns)."""
        state = self._lookup(dep)
        if state is None:
            return
        state.warm_dialing = max(state.warm_dialing - 1, 0)
        if ok:
            state.warm_idle += 1
            state.record_success(now, handshake_seconds, "warm dial connected", self.settings)
        else:
            state.record_failure(now, kind, retry_after, self.settings, self._may_eject(state))

    def warm_dial_abandoned(self, dep: Deployment) -> None:
        """A claimed warm dial was cancelled (room for a session, reload, shutdown)."""
        state = self._lookup(dep)
        if state is not None:
            state.warm_dialing = max(state.warm_dialing - 1, 0)

    def warm_closed(self, dep: Deployment) -> None:
        """An idle warm connection of ``dep`` was closed (expired, dead, displaced)."""
        state = self._lookup(dep)
        if state is not None:
            state.warm_idle = max(state.warm_idle - 1, 0)

    def warm_taken(self, dep: Deployment, reserved_at: float) -> None:
        """A session reserved at ``reserved_at`` took an idle warm connection of ``dep``.

        Its slot already counts the connection; its own ``rpm`` entry goes, since
        nothing new was dialed (the warm dial was counted when it started).
        """
        state = self._lookup(dep)
        if state is None:
            return
        state.warm_idle = max(state.warm_idle - 1, 0)
        try:
            state.recent_starts.remove(reserved_at)
        except ValueError:
            pass

    def warm_excess(self, dep: Deployment) -> int:
        """Warm connections of ``dep`` to close before a session dials fresh, so
        sessions plus warm connections stay within ``max_parallel_requests``."""
        state = self._lookup(dep)
        cap = dep.max_parallel_requests
        if state is None or cap is None:
            return 0
        return max(state.active + state.warm_idle + state.warm_dialing - cap, 0)

    def fresh_dial_allowed(self, dep: Deployment, now: float) -> bool:
        """May a session that reserved ``dep`` dial it fresh under ``rpm``? (It may have
        passed the gate only because a warm connection was idle.)"""
        state = self._lookup(dep)
        if state is None or dep.rpm is None:
            return True
        state.refresh(now)
        return len(state.recent_starts) <= dep.rpm

    # -- shared health (rtgate.session.shared_state does the I/O) ---------------------------------

    def deployment_ids(self) -> list[str]:
        return list(self._states)

    def adopt_verdicts(self, verdicts: dict[str, tuple[float, int]], now: float) -> None:
        """Apply the shared ejections (deployment id -> (seconds remaining, level)); an
        adopted ejection whose record is gone was restored elsewhere."""
        for dep_id, state in self._states.items():
            found = verdicts.get(dep_id)
            if found is not None:
                state.adopt_verdict(now, found[0], found[1])
            else:
                state.adopt_restore(now)

    def adopt_refusal(self, dep: Deployment, now: float, retry_after: float) -> None:
        """Shared state refused ``dep`` as cooling for ``retry_after`` seconds."""
        state = self._current(dep)
        if state is not None:
            state.adopt_verdict(now, retry_after, state.ejection_level)

    def health_changes(self, published: dict[str, int], now: float) -> list[tuple[str, float, int]]:
        """Verdicts decided here since ``published`` (id -> serial, updated in place):
        ``(id, cooldown seconds left, level)`` per ejection, ``(id, -1, 0)`` per restoration."""
        changes: list[tuple[str, float, int]] = []
        for dep_id, state in self._states.items():
            if published.get(dep_id, 0) == state.verdict_serial:
                continue
            published[dep_id] = state.verdict_serial
            if state.phase is Phase.CLOSED:
                changes.append((dep_id, -1.0, 0))
            elif state.phase is Phase.EJECTED and not state.shared_verdict:
                changes.append((dep_id, state.cooldown_remaining(now), state.ejection_level))
        return changes

    # -- visibility -----------------------------------------------------------------

    def readiness(self, now: float) -> dict[str, bool]:
        """Per group: could some deployment take a new session right now?"""
        return {
            group: any(s.gate(now) in _USABLE for s in members)
            for group, members in self._groups.items()
        }

    def ejection_counts(self) -> dict[str, int]:
        """Ejections per deployment id since start (monotonic, for a metrics counter)."""
        return {dep_id: s.ejections for dep_id, s in self._states.items()}

    def statistics(self, now: float) -> dict[str, dict[str, object]]:
        """Per deployment id: JSON-ready load and health (for the admin endpoint)."""
        return {dep_id: _describe(s, now) for dep_id, s in self._states.items()}


def _describe(state: DeploymentState, now: float) -> dict[str, object]:
    described = _describe_health(state, now)
    if state.deployment.warm_pool is not None:
        described["warm_idle"] = state.warm_idle
        described["warm_dialing"] = state.warm_dialing
    return described


def _describe_health(state: DeploymentState, now: float) -> dict[str, object]:
    state.refresh(now)
    dep = state.deployment
    phase = state.phase.value
    if state.phase is Phase.CLOSED and state.int_weight == 0:
        phase = "standby"
    return {
        "model_name": dep.model_name,
        "provider": dep.provider,
        "model": dep.model,
        "state": phase,
        "weight": dep.weight,
        "active_sessions": state.active,
        "max_parallel_requests": dep.max_parallel_requests,
        "rpm": dep.rpm,
        "sessions_last_minute": len(state.recent_starts),
        "consecutive_failures": state.connect_failures,
        "consecutive_early_closes": state.early_closes,
        "ejections": state.ejections,
        "cooldown_remaining": round(state.cooldown_remaining(now), 3),
        "ejection_suppressed": state.ejection_suppressed,
        "last_error": state.last_error,
        "last_error_seconds_ago": (
            None if state.last_error_at is None else round(now - state.last_error_at, 3)
        ),
        "handshake_latency_ewma": (
            None if state.handshake_ewma is None else round(state.handshake_ewma, 4)
        ),
    }
