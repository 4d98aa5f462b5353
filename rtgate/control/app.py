"""The control plane: a small ASGI app for health, readiness, metrics and admin.

Served by hypercorn (trio worker) behind the front's splice. Nothing here is
on a realtime frame's path. Routes::

    GET /health/liveliness   (alias /health/liveness)  200 while the process runs
    GET /health/readiness    200 when every model group has a usable deployment, else 503
    GET /metrics             Prometheus text (optionally master-key protected); with
                             --workers for the whole host, ?worker=self for this worker only
    GET /admin/pool          pool statistics per deployment (master key)
    /key/*, /spend/logs, /global/spend/report   LiteLLM's key and spend API (master key;
                             rtgate.control.keys)
    POST /v1/realtime/client_secrets  (and /realtime/..., /openai/v1/realtime/...)  mint an ek_ secret
    POST /v1/realtime/calls, DELETE /v1/realtime/calls/{id}  WebRTC calls (rtgate.control.calls)
    /ui ...                  the status page (``rtgate.control.ui``; master key)

With ``rtgate.ops_listen`` set, the public port's app is made with
``detail=False``: ``/metrics``, ``/admin/*`` and ``/ui`` answer 404 there (they live on
the ops listener), and readiness says only ready or not, naming no model group.
A request carrying more than one credential is refused with 400 on every path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
import trio

from rtgate import __version__
from rtgate.control import calls, client_secrets
from rtgate.control import keys as key_api
from rtgate.control.metrics import PrometheusMetrics
from rtgate.control.ui import StatusPage
from rtgate.errors import BadRequest, scrub
from rtgate.session.auth import check_one_credential, presented_key
from rtgate.session.gateway import Gateway
from rtgate.shared.store import StoreUnavailable, deployment_scope

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MetricsRenderer = Callable[[Gateway], tuple[bytes, str]]


class ControlApp:
    """ASGI 3 application over a :class:`Gateway`."""

    def __init__(
        self,
        gateway: Gateway,
        metrics: MetricsRenderer | None = None,
        *,
        detail: bool = True,
        head_limits: tuple[int, int] | None = None,
    ) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.detail = detail
        """False on the public port when an ops listener serves metrics, admin and details."""
        self.head_limits = head_limits
        """(header fields, bytes per line) of the front (``rtgate.edge.head``): the front checks
        a connection's first head; later ones on a kept-alive connection are checked here."""
        self.ui = StatusPage(gateway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.head_limits is not None and _over_limits(scope, *self.head_limits):
            await _json(send, 431, {"error": "request header fields too large"})
            return
        if path in key_api.ROUTES:  # LiteLLM's key and spend API (rtgate/control/keys.py)
            if not self._one_credential(scope):
                await _json(send, 400, {"error": "more than one credential"})
                return
            api = key_api.KeyApi(self.gateway.governance)
            await key_api.serve(api, scope, receive, send, self._is_master(headers))
            return
        if method == "POST" and path in client_secrets.CLIENT_SECRET_PATHS:
            if not self._one_credential(scope):
                await _json(send, 400, {"error": "more than one credential"})
                return
            status, body = await client_secrets.mint(self.gateway, headers, receive)
            await _json(send, status, body)
            return
        route = calls.calls_route(path)
        if route is not None:  # WebRTC calls (rtgate/control/calls.py)
            await self._calls(scope, receive, send, method, headers, route[1], route[2])
            return
        ui = path == "/ui" or path.startswith("/ui/")
        if method not in ("GET", "HEAD") and not ui:  # the status page's sign-in is a POST
            await _json(send, 405, {"error": "method not allowed"})
            return
        try:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            check_one_credential(headers_of(scope), (), query)
        except BadRequest as exc:
            await _json(send, 400, {"error": exc.message})
            return
        if ui:
            if not self.detail:
                await _json(send, 404, {"error": f"{path} is served on the ops listener"})
            else:
                await self.ui(scope, receive, send, path, headers)
            return
        if path in ("/health/liveliness", "/health/liveness", "/health"):
            await _json(send, 200, {"status": "alive", "version": __version__})
        elif path == "/health/readiness":
            await self._readiness(send)
        elif not self.detail and (path == "/metrics" or path.startswith("/admin")):
            await _json(send, 404, {"error": f"{path} is served on the ops listener"})
        elif path == "/metrics":
            await self._metrics(send, headers, ("worker", "self") in query)
        elif path == "/admin/pool":
            if not self._is_master(headers):
                await _json(send, 401, {"error": "master key required"})
                return
            await _json(send, 200, await self._pool_view())
        elif path == "/":
            await _json(send, 200, {"name": "rtgate", "version": __version__})
        else:
            await _json(send, 404, {"error": f"no route {path}"})

    async def _calls(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        headers: dict[str, str],
        call_id: str | None,
        action: str | None,
    ) -> None:
        cors = calls.cors_headers(self.gateway, headers)
        if method == "OPTIONS":  # a browser's preflight: pages call rtgate directly, as OpenAI
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return
        if not self._one_credential(scope):
            await _json(send, 400, {"error": "more than one credential"})
            return
        if call_id is None and method == "POST":
            status, body, extra = await calls.offer(self.gateway, scope, headers, receive)
            if status == 201:
                extra = [(b"content-type", b"application/sdp"), *extra]
        elif call_id is not None and (
            (method == "DELETE" and action is None) or (method == "POST" and action == "hangup")
        ):
            status, body, extra = await calls.hang_up(self.gateway, call_id, headers)
        else:
            await _json(send, 405, {"error": "method not allowed"})
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*extra, *cors, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

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

    @staticmethod
    def _one_credential(scope: Scope) -> bool:
        """False for a request with several credentials (answered 400 by the common path)."""
        try:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            check_one_credential(headers_of(scope), (), query)
        except BadRequest:
            return False
        return True

    def _is_master(self, headers: dict[str, str]) -> bool:
        return self.gateway.auth.is_master(presented_key(headers, (), {}))

    async def _readiness(self, send: Send) -> None:
        gateway = self.gateway
        groups = gateway.pool.readiness(trio.current_time())
        ready = bool(groups) and all(groups.values()) and not gateway.draining
        shared = gateway.admission.shared
        if shared is not None and not shared.up and shared.outage_closed:
            ready = False  # shared_state_outage: closed refuses every session now
        if not self.detail:
            await _json(
                send, 200 if ready else 503, {"status": "ready" if ready else "unavailable"}
            )
            return
        body: dict[str, object] = {
            "status": "ready" if ready else "unavailable",
            "draining": gateway.draining,
            "groups": groups,
            "unavailable_groups": sorted(g for g, ok in groups.items() if not ok),
            "sessions_active": gateway.counters.sessions_active,
            "db": "connected" if gateway.governance.database_up else "disconnected",
            "database": gateway.governance.readiness(),
        }
        if shared is not None:
            body["shared_state"] = shared.describe()
        await _json(send, 200 if ready else 503, body)

    async def _metrics(self, send: Send, headers: dict[str, str], own_only: bool) -> None:
        if self.gateway.config.server.metrics_auth and not self._is_master(headers):
            await _json(send, 401, {"error": "master key required"})
            return
        if self.metrics is None:
            await _json(send, 404, {"error": "metrics disabled"})
            return
        # PrometheusMetrics answers off the event loop, and ?worker=self for one worker.
        if isinstance(self.metrics, PrometheusMetrics):
            body, content_type = await self.metrics.answer(self.gateway, own_only=own_only)
        else:
            body, content_type = self.metrics(self.gateway)
        await _respond(send, 200, body, content_type)


def _over_limits(scope: Scope, max_headers: int, max_line: int) -> bool:
    raw = scope["headers"]
    if len(raw) > max_headers:
        return True
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 1
    request_line = len(scope["method"]) + target + len(" HTTP/1.1") + 1
    return request_line > max_line or any(len(k) + 2 + len(v) > max_line for k, v in raw)


def headers_of(scope: Scope) -> list[tuple[str, str]]:
    """The request's headers as (name, value) text pairs, every one kept (duplicates too)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]


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
