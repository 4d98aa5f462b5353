"""The deployment pool: which deployment serves the next session.

Pure: no trio, no sockets; every method that depends on time takes ``now``
(seconds on the relay's clock, ``trio.current_time()``).

The relay walks one :class:`Selection` per client handshake::

    sel = pool.select("gpt-realtime", now)        # UnknownModel if no such group
    while (dep := sel.next(now)) is not None:     # reserves a session slot on dep
        try: link = await dial(dep)
        except UpstreamConnectError as e:
            sel.failed(dep, now, e.kind, e.retry_after)   # slot released, health updated
            continue
        sel.succeeded(dep, now, handshake_seconds)       # the slot is now a live session
        break
    else:
        raise sel.exhausted()                     # NoDeploymentAvailable / AllDeploymentsBusy
    ...
    pool.session_ended(dep, now, abnormal=..., duration=...)
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from rtgate.config.model import Deployment, GatewayConfig
from rtgate.errors import AllDeploymentsBusy, NoDeploymentAvailable, UnknownModel


@attrs.define
class _DeploymentState:
    deployment: Deployment
    active: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None


class Selection:
    """One handshake's walk over candidate deployments (see module docstring)."""

    def __init__(self, pool: Pool, group: str, order: list[_DeploymentState]) -> None:
        self._pool = pool
        self._group = group
        self._order: Iterator[_DeploymentState] = iter(order)
        self._busy = 0
        self._tried = 0

    def next(self, now: float) -> Deployment | None:
        for state in self._order:
            dep = state.deployment
            if dep.max_parallel_requests is not None and state.active >= dep.max_parallel_requests:
                self._busy += 1
                continue
            state.active += 1
            self._tried += 1
            return dep
        return None

    def failed(
        self, dep: Deployment, now: float, kind: str, retry_after: float | None = None
    ) -> None:
        state = self._pool._states[dep.id]
        state.active -= 1
        state.consecutive_failures += 1
        state.last_error = kind

    def succeeded(self, dep: Deployment, now: float, handshake_seconds: float) -> None:
        state = self._pool._states[dep.id]
        state.consecutive_failures = 0

    def exhausted(self) -> NoDeploymentAvailable:
        if self._tried == 0 and self._busy:
            return AllDeploymentsBusy(f"every deployment of {self._group!r} is at capacity", 1.0)
        return NoDeploymentAvailable(f"no deployment of {self._group!r} could take the session")


class Pool:
    """Round-robin over each group's deployments (the pool issue grows this)."""

    def __init__(self, config: GatewayConfig) -> None:
        self._groups = config.groups()
        self._states = {d.id: _DeploymentState(d) for d in config.deployments}
        self._cursor = dict.fromkeys(self._groups, 0)

    def select(self, group: str, now: float) -> Selection:
        deps = self._groups.get(group)
        if not deps:
            raise UnknownModel(f"model {group!r} is not served here")
        start = self._cursor[group]
        self._cursor[group] = (start + 1) % len(deps)
        order = [self._states[d.id] for d in deps[start:] + deps[:start]]
        return Selection(self, group, order)

    def session_ended(
        self, dep: Deployment, now: float, *, abnormal: bool, duration: float
    ) -> None:
        self._states[dep.id].active -= 1

    def groups(self) -> dict[str, tuple[Deployment, ...]]:
        return dict(self._groups)

    def readiness(self, now: float) -> dict[str, bool]:
        """Per group: could a new session be served right now?"""
        return dict.fromkeys(self._groups, True)

    def statistics(self, now: float) -> dict[str, object]:
        return {
            dep_id: {
                "model_name": s.deployment.model_name,
                "active_sessions": s.active,
                "consecutive_failures": s.consecutive_failures,
                "last_error": s.last_error,
            }
            for dep_id, s in self._states.items()
        }
