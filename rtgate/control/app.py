"""The control plane: a small ASGI app for health, readiness, metrics and admin.

Served by hypercorn (trio worker) behind the front's splice. Nothing here is
on a realtime frame's path. Routes::

    GET /health/liveliness   (alias /health/liveness)  200 while the process runs
    GET /health/readiness    200 when every model group has a usable deployment, else 503
    GET /metrics             Prometheus text (optionally master-key protected)
    GET /admin/pool          pool statistics per deployment (master key)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import trio

from rtgate import __version__
from rtgate.errors import scrub
from rtgate.session.auth import presented_key
from rtgate.session.gateway import Gateway
from rtgate.shared.store import StoreUnavailable, deployment_scope

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MetricsRenderer = Callable[[Gateway], tuple[bytes, str]]


class ControlApp:
    """ASGI 3 application over a :class:`Gateway`."""

    def __init__(self, gateway: Gateway, metrics: MetricsRenderer | None = None) -> None:
        self.gateway = gateway
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if method not in ("GET", "HEAD"):
            await _json(send, 405, {"error": "method not allowed"})
            return
        if path in ("/health/liveliness", "/health/liveness", "/health"):
            await _json(send, 200, {"status": "alive", "version": __version__})
        elif path == "/health/readiness":
            await self._readiness(send)
        elif path == "/metrics":
            await self._metrics(send, headers)
        elif path == "/admin/pool":
            if not self._is_master(headers):
                await _json(send, 401, {"error": "master key required"})
                return
            await _json(send, 200, await self._pool_view())
        elif path == "/":
            await _json(send, 200, {"name": "rtgate", "version": __version__})
        else:
            await _json(send, 404, {"error": f"no route {path}"})

    async def _pool_view(self) -> dict[str, dict[str, object]]:
        """Per deployment: this process's statistics, and with shared state a ``shared``
        entry (sessions across every process, which process holds how many, ejection)."""
        gateway = self.gateway
        stats = gateway.pool.statistics(trio.current_time())
        shared = gateway.admission.shared
        if shared is None:
            return stats
        try:
            view = await shared.view()
        except StoreUnavailable as exc:
            for entry in stats.values():
                error = scrub(str(exc), gateway.secrets)
                entry["shared"] = {"store": shared.kind, "up": False, "error": error}
            return stats
        verdicts = {v.deployment: v for v in view.verdicts}
        for dep_id, entry in stats.items():
            scope = deployment_scope(dep_id)
            verdict = verdicts.get(dep_id)
            entry["shared"] = {
                "store": shared.kind,
                "up": True,
                "active_sessions": view.active.get(scope, 0),
                "by_member": {m: n[scope] for m, n in view.by_member.items() if scope in n},
                "ejected": verdict is not None,
                "cooldown_remaining": None if verdict is None else round(verdict.remaining, 3),
                "ejection_level": None if verdict is None else verdict.level,
                "members": view.members,
            }
        return stats

    def _is_master(self, headers: dict[str, str]) -> bool:
        return self.gateway.auth.is_master(presented_key(headers, (), {}))

    async def _readiness(self, send: Send) -> None:
        gateway = self.gateway
        groups = gateway.pool.readiness(trio.current_time())
        ready = bool(groups) and all(groups.values()) and not gateway.draining
        shared = gateway.admission.shared
        if shared is not None and not shared.up and shared.outage_closed:
            ready = False  # shared_state_outage: closed refuses every session now
        body: dict[str, object] = {
            "status": "ready" if ready else "unavailable",
            "draining": gateway.draining,
            "groups": groups,
            "unavailable_groups": sorted(g for g, ok in groups.items() if not ok),
            "sessions_active": gateway.counters.sessions_active,
        }
        if shared is not None:
            body["shared_state"] = shared.describe()
        await _json(send, 200 if ready else 503, body)

    async def _metrics(self, send: Send, headers: dict[str, str]) -> None:
        if self.gateway.config.server.metrics_auth and not self._is_master(headers):
            await _json(send, 401, {"error": "master key required"})
            return
        if self.metrics is None:
            await _json(send, 404, {"error": "metrics disabled"})
            return
        body, content_type = self.metrics(self.gateway)
        await _respond(send, 200, body, content_type)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _json(send: Send, status: int, body: object) -> None:
    await _respond(send, status, orjson.dumps(body), "application/json")


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
