"""Start-up and shutdown of one gateway process: both planes on one port.

``serve`` owns the root nursery: hypercorn with the control app on a private
Unix socket, the event-log writer, and the public listener whose connections
the :class:`Front` routes. Shutdown drains: readiness turns 503, the listener
closes, running sessions get up to ``drain_seconds``, then the rest are closed
with 1001 and an ``error`` event; the event log is flushed last.

:func:`run_until_signalled` is one process of ``rtgate serve``: signals
(TERM/INT drain, a second one hurries, HUP reloads), systemd notify and
watchdog, and the reload itself (validate first, keep the old config on error).
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import shutil
import signal
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio
from hypercorn.config import Config as HypercornConfig

from rtgate.config.model import GatewayConfig
from rtgate.control.app import ControlApp, MetricsRenderer
from rtgate.edge.control_server import QuietHypercornRaces, serve_control_plane
from rtgate.edge.front import Front
from rtgate.edge.head import HEAD_LIMITS
from rtgate.edge.signals import StopRequests
from rtgate.edge.sockets import bind_listener
from rtgate.edge.systemd import Notifier
from rtgate.errors import ConfigError
from rtgate.session.forwarded_calls import ForwardedCalls
from rtgate.session.gateway import Gateway
from rtgate.session.health_checks import provider_connect, run_health_checks
from rtgate.session.shared_state import open_store
from rtgate.telemetry.tap import ServedEventLog
from rtgate.telemetry.tracing import Tracing
from rtgate.webrtc.terminate import TerminatedCalls

if TYPE_CHECKING:
    from rtgate.control.metrics import PrometheusMetrics

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
    hurry: trio.Event = attrs.field(factory=trio.Event)
    """Set it during a drain to close the remaining sessions (1001) now."""
    ops_port: int | None = None
    """Bound port of ``rtgate.ops_listen`` (None: metrics and admin are on the public port)."""
    control_configs: tuple[HypercornConfig, ...] = ()
    """The control plane's hypercorn settings (a reload changes their keep-alive)."""

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
    event_log: ServedEventLog | None = None,
    listeners: list[trio.SocketListener] | None = None,
    on_stopping: Callable[[], Awaitable[None]] | None = None,
    hurry: trio.Event | None = None,
    task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway until ``stop`` is set, then drain and return.

    ``metrics`` defaults to the Prometheus renderer of :mod:`rtgate.control.metrics`;
    ``hurry``, set during the drain, cuts it short.
    """
    host = config.server.host if host is None else host
    port = config.server.port if port is None else port
    check_exposure(config, host)
    stop = trio.Event() if stop is None else stop
    hurry = trio.Event() if hurry is None else hurry
    from rtgate.control.metrics import PrometheusMetrics

    if metrics is None:
        metrics = PrometheusMetrics()
    tracing = Tracing.for_config(config.telemetry, os.environ.get("RTGATE_WORKER_ID", "0"))
    gateway = Gateway(config, event_log=event_log, tracing=tracing)
    # Calls to Gemini, Vertex, Nova Sonic and mock deployments: WebRTC terminated here.
    terminated_calls = TerminatedCalls(gateway)
    gateway.calls.terminate = terminated_calls
    # Calls to OpenAI and Azure: the provider terminates WebRTC; rtgate keeps the sideband.
    gateway.calls.forward = ForwardedCalls(gateway)
    runtime_dir = tempfile.mkdtemp(prefix="rtgate-")
    control_socket = os.path.join(runtime_dir, "control.sock")
    try:
        async with trio.open_nursery() as nursery:
            if event_log is not None:
                await nursery.start(event_log.run)
            if tracing is not None:
                await nursery.start(tracing.run)
            control_stop = trio.Event()
            ops_address = config.server.ops_address()
            handshake_timeout = config.server.limits.handshake_timeout
            head_limits = (HEAD_LIMITS.max_headers, HEAD_LIMITS.max_line)
            control_app = ControlApp(
                gateway, metrics, detail=ops_address is None, head_limits=head_limits
            )
            control_configs = [_hypercorn_config(control_socket, handshake_timeout)]
            await nursery.start(
                partial(serve_control_plane, control_app, control_configs[0], control_stop)
            )
            if ops_address is not None:
                ops_socket = os.path.join(runtime_dir, "ops.sock")
                control_configs.append(_hypercorn_config(ops_socket, handshake_timeout))
                ops_app = ControlApp(gateway, metrics, head_limits=head_limits)
                await nursery.start(
                    partial(serve_control_plane, ops_app, control_configs[1], control_stop)
                )
            # Active health checks dial only deployments with a health_check_interval.
            await nursery.start(
                partial(run_health_checks, gateway.pool, connect=provider_connect(gateway.pool))
            )
            # Shared state (--workers, Redis): leases renewed and health shared from here on.
            shared = gateway.share_state(open_store(config))
            if shared is not None:
                await nursery.start(shared.run)
            # Warm pools (deployments with litellm_params.warm_pool) dial from here on.
            await nursery.start(gateway.warm.run)
            # Keys, budgets and spend: connects and migrates the database, retrying if it is down.
            await nursery.start(gateway.governance.run)
            # WebRTC calls outlive the request that answered their offer: this nursery owns them.
            await nursery.start(gateway.calls.run)
            if isinstance(metrics, PrometheusMetrics) and metrics.host is not None:
                # --workers: this worker's snapshot, so that any worker answers for the host.
                nursery.start_soon(_publish_metrics, metrics, gateway)
            if listeners is None:
                listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
            front = Front(gateway, control_socket, server_tls_context(config))
            listen_scope = trio.CancelScope()

            async def accept_loop() -> None:
                with listen_scope:
                    await trio.serve_listeners(front.handle, listeners, handler_nursery=nursery)

            nursery.start_soon(accept_loop)
            bound_port = listeners[0].socket.getsockname()[1]
            ops_port = None
            if ops_address is not None:
                ops_listener = _ops_listener(*ops_address)
                ops_port = ops_listener.socket.getsockname()[1]
                ops_front = Front(gateway, ops_socket, realtime=False)

                # Open through the drain (metrics and readiness stay visible); closed with the rest.
                nursery.start_soon(
                    partial(
                        trio.serve_listeners,
                        ops_front.handle,
                        [ops_listener],
                        handler_nursery=nursery,
                    )
                )
                log.info(
                    "ops listener (metrics, admin, readiness) on %s:%s", ops_address[0], ops_port
                )
            log.info(
                "rtgate listening on %s:%s (%d deployments)",
                host,
                bound_port,
                len(config.deployments),
            )
            task_status.started(
                ServerHandle(
                    gateway, front, host, bound_port, stop, hurry,
                    ops_port=ops_port, control_configs=tuple(control_configs),
                )
            )  # fmt: skip
            await stop.wait()
            if on_stopping is not None:
                await on_stopping()
            await gateway.warm.drain()  # idle warm connections: closed politely (1001)
            # The drain length is the config in force now (a reload may have changed it).
            await _drain(gateway, listen_scope, gateway.config.server.limits.drain_seconds, hurry)
            await gateway.governance.aclose()  # buffered spend: written, or spilled to a file
            control_stop.set()
            if event_log is not None:
                await event_log.aclose()
            if tracing is not None:
                await tracing.aclose()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await terminated_calls.aclose()
        shutil.rmtree(runtime_dir, ignore_errors=True)


async def _drain(
    gateway: Gateway, listen_scope: trio.CancelScope, drain_seconds: float, hurry: trio.Event
) -> None:
    # The port stays open while draining: new sessions get 503 at the handshake and
    # /health/readiness answers 503, so load balancers see the drain; it closes after.
    gateway.draining = True
    log.info("draining %d sessions (up to %.0fs)", gateway.counters.sessions_active, drain_seconds)
    with trio.move_on_after(drain_seconds):
        while gateway.counters.sessions_active > 0 and not hurry.is_set():
            await trio.sleep(0.05)
    if gateway.counters.sessions_active:
        log.info("closing %d sessions with 1001", gateway.counters.sessions_active)
    gateway.shutdown.set()
    with trio.move_on_after(5):
        while gateway.counters.sessions_active > 0:
            await trio.sleep(0.02)
    listen_scope.cancel()


HOST_METRICS_PUBLISH_SECONDS = 1.0


async def _publish_metrics(metrics: PrometheusMetrics, gateway: Gateway) -> None:
    """Write this worker's metric snapshot for its peers every second, drain included.

    The families are collected here, on the loop (they read live counters); the text
    and the write, most of the cost, run on a thread.
    """
    failed = False
    while True:
        try:
            families, sequence = metrics.collect_for_publishing(gateway)
            await trio.to_thread.run_sync(metrics.write_snapshot, families, sequence)
            failed = False
        except Exception as exc:  # a full or removed runtime directory: retried, logged once
            if not failed:
                log.warning("cannot publish this worker's metrics for the host: %r", exc)
            failed = True
        await trio.sleep(HOST_METRICS_PUBLISH_SECONDS)


def _hypercorn_config(control_socket: str, handshake_timeout: float) -> HypercornConfig:
    hconfig = HypercornConfig()
    hconfig.bind = [f"unix:{control_socket}"]
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("rtgate.control")
    if not any(isinstance(f, QuietHypercornRaces) for f in hconfig.errorlog.filters):
        hconfig.errorlog.addFilter(QuietHypercornRaces())
    hconfig.graceful_timeout = 1.0
    # The next request on a kept-alive connection gets the first one's bounds: it must
    # arrive within handshake_timeout, and its head fit the front's total size.
    hconfig.keep_alive_timeout = handshake_timeout
    hconfig.h11_max_incomplete_size = HEAD_LIMITS.max_total
    return hconfig


def _ops_listener(host: str, port: int) -> trio.SocketListener:
    """The ops port; workers of ``--workers N`` share it with SO_REUSEPORT like the public one."""
    under_supervisor = "RTGATE_SUPERVISOR_PID" in os.environ
    sock = bind_listener(host, port, backlog=128, reuse_port=under_supervisor)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


# -- one process of ``rtgate serve`` ----------------------------------------------------


async def run_until_signalled(
    config_path: str,
    config: GatewayConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    listeners: list[trio.SocketListener] | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, reloading ``config_path`` on SIGHUP; return after the drain.

    The first TERM/INT starts the drain (readiness 503, listener closed,
    sessions get ``drain_seconds``); a second one closes the remaining
    sessions with 1001 at once; a third one exits without waiting. Copies of
    one signal within a second count once (:mod:`rtgate.edge.signals`).
    """
    notifier = notifier or Notifier()
    from rtgate.telemetry.tracing import check_environment

    check_environment(config.telemetry)  # a bad OTEL_*/LANGFUSE_* setting: a clear error, now
    event_log = _event_log_for(config)
    for problem in unusable_sinks(config):
        log.warning("event log sink cannot work: %s", problem)
    stop = trio.Event()
    hurry = trio.Event()
    state = _ReloadState(config_path, config, host or config.server.host, event_log, notifier)

    async def stopping() -> None:
        notifier.stopping()

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def serve_then_finish(task_status: trio.TaskStatus[ServerHandle]) -> None:
                await serve(
                    config, host=host, port=port, stop=stop, hurry=hurry, event_log=event_log,
                    listeners=listeners, on_stopping=stopping, task_status=task_status,
                )  # fmt: skip
                nursery.cancel_scope.cancel()  # drained: stop the watchdog and signal tasks

            handle: ServerHandle = await nursery.start(serve_then_finish)
            state.handle = handle
            freeze_startup_heap()
            nursery.start_soon(notifier.run_watchdog)
            notifier.ready(f"serving {len(config.deployments)} deployments on port {handle.port}")

            async def watch_signals() -> None:
                requests = StopRequests()
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        if not stop.is_set():
                            state.reload()
                        continue
                    if not requests.note(trio.current_time()):
                        log.debug("%s again within %.0f s: the same request",
                                  signal.Signals(signum).name, requests.window)  # fmt: skip
                        continue
                    terms = requests.count
                    if terms == 1:
                        log.info("%s: draining", signal.Signals(signum).name)
                        stop.set()
                    elif terms == 2:
                        log.info(
                            "second %s: closing every session now", signal.Signals(signum).name
                        )
                        hurry.set()
                    else:
                        log.warning("third signal: exiting without a drain")
                        os._exit(1)

            nursery.start_soon(watch_signals)
            supervisor = os.environ.get("RTGATE_SUPERVISOR_PID")
            if supervisor:
                nursery.start_soon(_stop_when_orphaned, int(supervisor), stop)
    notifier.close()


def freeze_startup_heap() -> None:
    """Leave what start-up built out of the cyclic collector's full passes.

    Imports, config and the server's objects live as long as the process; a full (gen 2)
    collection walked all of them, a pause of about 20 ms that landed on whatever setups
    were in flight (measured with ``bench/shared_setup.py``: the p99 of SQLite setups was
    that pause). ``gc.freeze`` (stdlib) moves them to the permanent generation; what
    sessions allocate is still collected.
    """
    gc.collect()
    gc.freeze()


async def _stop_when_orphaned(supervisor_pid: int, stop: trio.Event) -> None:
    """A worker whose supervisor died (SIGKILL, OOM) drains instead of living on alone."""
    while os.getppid() == supervisor_pid:
        await trio.sleep(1.0)
    log.error("supervisor %d is gone: draining", supervisor_pid)
    stop.set()


@attrs.define
class _ReloadState:
    path: str
    config: GatewayConfig
    host: str
    event_log: ServedEventLog | None
    notifier: Notifier
    handle: ServerHandle | None = None

    def reload(self) -> bool:
        """SIGHUP: validate the file, then apply it to new sessions; keep the old one on error."""
        assert self.handle is not None
        gateway = self.handle.gateway
        self.notifier.reloading()
        try:
            new = reload_config(self.path, self.config, self.host)
            gateway.reload(new)
            for hconfig in self.handle.control_configs:
                hconfig.keep_alive_timeout = new.server.limits.handshake_timeout
            if self.event_log is not None:
                self.event_log.reconfigure(new.event_log)
            if (new.server.log_level, new.server.log_format) != (
                self.config.server.log_level,
                self.config.server.log_format,
            ):
                configure_logging(new.server.log_level, new.server.log_format)
        except ConfigError as exc:
            gateway.counters.reloads["error"] = gateway.counters.reloads.get("error", 0) + 1
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready("reload failed; running the previous configuration")
            return False
        self.config = new
        gateway.counters.reloads["ok"] = gateway.counters.reloads.get("ok", 0) + 1
        log.info("reloaded %s: %s", self.path, config_summary(new))
        self.notifier.ready(f"serving {len(new.deployments)} deployments (reloaded)")
        return True


def reload_config(path: str, running: GatewayConfig, host: str) -> GatewayConfig:
    """Load and validate ``path`` for a reload (raises :class:`ConfigError`, changes nothing)."""
    from rtgate.config.load import world_readable_secrets
    from rtgate.edge.configfile import load_config

    result = load_config(path)
    for warning in result.warnings:
        log.warning("%s", warning)
    exposed = world_readable_secrets(path, result)
    if exposed is not None:
        raise ConfigError(exposed.removeprefix(f"{path}: "), path=path)
    new = result.config
    check_exposure(new, host)
    old_server, new_server = running.server, new.server
    if (old_server.host, old_server.port) != (new_server.host, new_server.port):
        log.warning("reload: host/port changes need a restart; still listening on the old address")
    if (old_server.tls_cert, old_server.tls_key) != (new_server.tls_cert, new_server.tls_key):
        log.warning("reload: TLS certificate changes need a restart")
    if running.telemetry != new.telemetry:
        log.warning("reload: trace settings (callbacks, rtgate.telemetry) need a restart")
    return new


def config_summary(config: GatewayConfig) -> str:
    """One line about a config for the log (never a secret)."""
    limits = config.server.limits
    return (
        f"{len(config.groups())} model groups, {len(config.deployments)} deployments, "
        f"{'master key' if config.master_key else 'no master key'}, "
        f"{len(config.server.keys)} virtual keys, max_sessions={limits.max_sessions}, "
        f"drain={limits.drain_seconds:g}s, event log sinks={len(config.event_log.sinks)}"
    )


def configure_logging(level: str, fmt: str) -> None:
    from rtgate.edge.logs import configure

    configure(level, fmt)


def unusable_sinks(config: GatewayConfig) -> list[str]:
    """Event-log sinks that cannot work, as far as can be told before writing (one line each)."""
    from rtgate.telemetry.sinks import sink_problems

    return sink_problems(config.event_log.sinks)


def _event_log_for(config: GatewayConfig) -> ServedEventLog | None:
    from rtgate.telemetry.eventlog import EventLogger

    return EventLogger.for_config(config)
