"""Start-up and shutdown of one gateway process: both planes on one port.

``serve`` owns the root nursery: hypercorn with the control app on a private
Unix socket, the event-log writer, and the public listener whose connections
the :class:`Front` routes. Shutdown drains: readiness turns 503, the listener
closes, running sessions get up to ``drain_seconds``, then the rest are closed
with 1001 and an ``error`` event; the event log is flushed last.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from rtgate.config.model import GatewayConfig
from rtgate.control import ControlApp, MetricsRenderer
from rtgate.errors import ConfigError
from rtgate.gateway import Gateway
from rtgate.net.front import Front

log = logging.getLogger("rtgate.server")


@attrs.define
class ServerHandle:
    """What a started server tells its starter (tests bind port 0 and read it here)."""

    gateway: Gateway
    front: Front
    host: str
    port: int
    stop: trio.Event
    """Set it to begin a graceful drain."""

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.front.tls else "ws"
        return f"{scheme}://{_url_host(self.host)}:{self.port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.front.tls else "http"
        return f"{scheme}://{_url_host(self.host)}:{self.port}"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def check_exposure(config: GatewayConfig, host: str) -> None:
    """Refuse an open public port by accident: no key at all needs loopback or an explicit opt-in."""
    if config.has_auth() or config.server.allow_unauthenticated:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"no master_key or rtgate.keys configured: refusing to listen on {host} "
            "(set rtgate.allow_unauthenticated: true, or listen on 127.0.0.1)",
            path=config.source,
        )


def server_tls_context(config: GatewayConfig) -> ssl.SSLContext | None:
    server = config.server
    if server.tls_cert is None or server.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server.tls_cert, server.tls_key)
    return ctx


async def serve(
    config: GatewayConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    stop: trio.Event | None = None,
    metrics: MetricsRenderer | None = None,
    event_log: object | None = None,
    listeners: list[trio.SocketListener] | None = None,
    on_stopping: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway until ``stop`` is set, then drain and return."""
    host = config.server.host if host is None else host
    port = config.server.port if port is None else port
    check_exposure(config, host)
    stop = stop or trio.Event()
    gateway = Gateway(config, event_log=event_log)  # type: ignore[arg-type]
    runtime_dir = tempfile.mkdtemp(prefix="rtgate-")
    control_socket = os.path.join(runtime_dir, "control.sock")
    try:
        async with trio.open_nursery() as nursery:
            run_log = getattr(event_log, "run", None)
            if run_log is not None:
                await nursery.start(run_log)
            control_stop = trio.Event()
            await nursery.start(
                partial(
                    hypercorn_serve,
                    cast(Any, ControlApp(gateway, metrics)),
                    _hypercorn_config(control_socket),
                    shutdown_trigger=control_stop.wait,
                )
            )
            if listeners is None:
                listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
            front = Front(gateway, control_socket, server_tls_context(config))
            listen_scope = trio.CancelScope()

            async def accept_loop() -> None:
                with listen_scope:
                    await trio.serve_listeners(front.handle, listeners, handler_nursery=nursery)

            nursery.start_soon(accept_loop)
            bound_port = listeners[0].socket.getsockname()[1]
            log.info(
                "rtgate listening on %s:%s (%d deployments)",
                host,
                bound_port,
                len(config.deployments),
            )
            task_status.started(ServerHandle(gateway, front, host, bound_port, stop))
            await stop.wait()
            if on_stopping is not None:
                await on_stopping()
            await _drain(gateway, listen_scope, config.server.limits.drain_seconds)
            control_stop.set()
            close_log = getattr(event_log, "aclose", None)
            if close_log is not None:
                await close_log()
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


async def _drain(gateway: Gateway, listen_scope: trio.CancelScope, drain_seconds: float) -> None:
    gateway.draining = True
    listen_scope.cancel()
    log.info("draining %d sessions (up to %.0fs)", gateway.counters.sessions_active, drain_seconds)
    with trio.move_on_after(drain_seconds):
        while gateway.counters.sessions_active > 0:
            await trio.sleep(0.05)
    if gateway.counters.sessions_active:
        log.info("closing %d sessions with 1001", gateway.counters.sessions_active)
    gateway.shutdown.set()
    with trio.move_on_after(5):
        while gateway.counters.sessions_active > 0:
            await trio.sleep(0.02)


def _hypercorn_config(control_socket: str) -> HypercornConfig:
    hconfig = HypercornConfig()
    hconfig.bind = [f"unix:{control_socket}"]
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("rtgate.control")
    hconfig.graceful_timeout = 1.0
    hconfig.keep_alive_timeout = 30.0
    return hconfig
