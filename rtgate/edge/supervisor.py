"""``rtgate serve --workers N``: one supervisor, N worker processes, one listening socket.

The supervisor binds one ``SO_REUSEPORT`` listening socket per worker on the
same port and worker *i* inherits socket *i* (``--listen-fd``): the kernel
spreads new connections evenly over the sockets (by 4-tuple hash), which a
single shared socket does not do (the first worker to wake takes most). The
supervisor keeps its copy of every socket open, so when a worker dies the
connections queued on its socket wait for its replacement instead of being
reset. On stop the supervisor closes its copies and each worker closes its
own as its drain starts, so the port stops accepting.

Workers are ordinary ``rtgate serve`` processes. Each reports to the
supervisor over its own notify socket with the systemd protocol
(:mod:`rtgate.edge.systemd`): ``READY=1`` when listening, ``WATCHDOG=1`` pings. The
supervisor owns the signals: TERM/INT -> ``STOPPING=1``, close its copy of the
socket, forward TERM, wait for the drains (a second TERM, more than a second
later, is forwarded too, to hurry them; copies of one group-wide signal count
once, here and in each worker); HUP -> validate the config, and if it is good, forward HUP (each
worker reloads; a bad file changes nothing anywhere). A worker that exits on
its own, or stops pinging its watchdog, is restarted with exponential backoff.
The supervisor tells systemd ``READY=1`` once every worker is listening and
pings systemd's watchdog from its own loop.

The supervisor's runtime directory holds what the workers share on the host:
the notify sockets, the SQLite file of shared limits and health
(``RTGATE_SHARED_STATE_FILE``) and the directory of metric snapshots
(``RTGATE_HOST_METRICS_DIR``, :mod:`rtgate.control.host_metrics`). Health is
per worker (a probe on the shared port reaches one); ``/metrics`` answers for
the host: the answering worker merges every worker's snapshot, exited workers'
counters included, and ``rtgate_info{worker,pid}`` has one series per live worker.
The directory lives as long as the supervisor, so the host's counters start
again from zero only when the supervisor does.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import attrs
import trio

from rtgate.config.model import GatewayConfig
from rtgate.control.host_metrics import HOST_METRICS_DIR_ENV
from rtgate.edge.signals import StopRequests
from rtgate.edge.sockets import bind_listener
from rtgate.edge.systemd import Notifier, parse_message
from rtgate.errors import ConfigError
from rtgate.session.shared_state import SHARED_STATE_FILE_ENV

log = logging.getLogger("rtgate.supervisor")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0
"""A worker that ran this long before dying restarts after the first backoff again."""
WORKER_WATCHDOG = 10.0
"""Seconds a ready worker may go without a ``WATCHDOG=1`` before it is killed and restarted."""
STARTUP_TIMEOUT = 60.0


def worker_count(value: str) -> int:
    """``--workers``: a positive number, or ``auto`` for the usable CPU cores."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"--workers must be a number or 'auto', not {value!r}") from None
    if count < 1:
        raise ConfigError("--workers must be at least 1")
    return count


def bind_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` ``SO_REUSEPORT`` sockets on one port (port 0: the first one's port)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(bind_listener(host, port, reuse_port=True))
            port = socks[0].getsockname()[1]
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def listener_from_fd(fd: int) -> trio.SocketListener:
    """A worker's listener over the socket it inherited."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


@attrs.define
class Worker:
    """One worker slot: restarts keep the number, the notify socket and the backoff."""

    number: int
    notify_path: str
    process: trio.Process | None = None
    ready: bool = False
    last_ping: float = 0.0
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_FIRST


class Supervisor:
    """Runs and watches the workers (see module docstring)."""

    def __init__(
        self,
        config_path: str,
        config: GatewayConfig,
        count: int,
        *,
        host: str | None = None,
        port: int | None = None,
        notifier: Notifier | None = None,
        worker_args: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.count = count
        self.host = host if host is not None else config.server.host
        self.port = port if port is not None else config.server.port
        self.notifier = notifier or Notifier()
        self.worker_args = tuple(worker_args)
        self.stopping = False
        self.workers: list[Worker] = []
        self.listen_socks: list[socket.socket] = []
        self.bound_port = 0
        self._all_ready = trio.Event()
        self._stop_requested = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> int:
        """Serve until told to stop; return the exit status (0 after a clean drain)."""
        from rtgate.edge.server import check_exposure

        check_exposure(self.config, self.host)
        runtime = tempfile.mkdtemp(prefix="rtgate-sup-")
        os.mkdir(os.path.join(runtime, "metrics"), mode=0o700)
        self.listen_socks = bind_listeners(self.host, self.port, self.count)
        self.bound_port = self.listen_socks[0].getsockname()[1]
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    for number in range(self.count):
                        worker = Worker(number, os.path.join(runtime, f"worker-{number}.sock"))
                        self.workers.append(worker)
                        sock = await self._notify_socket(worker.notify_path)
                        nursery.start_soon(self._listen_notify, worker, sock)
                    async with trio.open_nursery() as slots:
                        for worker in self.workers:
                            slots.start_soon(self._keep_running, worker)
                        nursery.start_soon(self._watch_signals, signals, nursery)
                        nursery.start_soon(self.notifier.run_watchdog)
                        nursery.start_soon(self._watch_workers)
                        with trio.move_on_after(STARTUP_TIMEOUT):
                            await self._ready_or_stopped()
                        if self._all_ready.is_set():
                            log.info(
                                "%d workers listening on %s:%d",
                                self.count, self.host, self.bound_port,
                            )  # fmt: skip
                            self.notifier.ready(
                                f"{self.count} workers serving on port {self.bound_port}"
                            )
                        task_status.started(self.bound_port)
                    nursery.cancel_scope.cancel()  # every slot ended: the workers are gone
        finally:
            self._close_listener()
            shutil.rmtree(runtime, ignore_errors=True)
            self.notifier.close()
        return 0

    async def _ready_or_stopped(self) -> None:
        """The start-up wait: every worker listening, or a stop asked for meanwhile.

        A worker told to stop before it installed its signal handlers dies of the
        signal and never reports READY; waiting for it would hold the drain up to
        ``STARTUP_TIMEOUT``.
        """
        async with trio.open_nursery() as waiters:

            async def wait_for(event: trio.Event) -> None:
                await event.wait()
                waiters.cancel_scope.cancel()

            waiters.start_soon(wait_for, self._all_ready)
            waiters.start_soon(wait_for, self._stop_requested)

    # -- workers ----------------------------------------------------------------

    async def _keep_running(self, worker: Worker) -> None:
        while not self.stopping:
            await self._run_once(worker)
            if self.stopping:
                return
            ran = trio.current_time() - worker.started_at
            if ran >= STABLE_AFTER:
                worker.backoff = BACKOFF_FIRST
            log.warning(
                "worker %d exited (status %s) after %.1fs; restarting in %.1fs",
                worker.number, worker.process.returncode if worker.process else None,
                ran, worker.backoff,
            )  # fmt: skip
            with trio.move_on_after(worker.backoff):
                while not self.stopping:
                    await trio.sleep(0.05)
            worker.backoff = min(worker.backoff * 2, BACKOFF_MAX)
            worker.restarts += 1

    async def _run_once(self, worker: Worker) -> None:
        if not self.listen_socks:
            return  # stopping already
        fd = self.listen_socks[worker.number].fileno()
        env = dict(os.environ)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
            env.pop(name, None)
        env["NOTIFY_SOCKET"] = worker.notify_path
        env["WATCHDOG_USEC"] = str(int(WORKER_WATCHDOG * 1_000_000))
        env["RTGATE_WORKER_ID"] = str(worker.number)
        env["RTGATE_SUPERVISOR_PID"] = str(os.getpid())
        # The workers' shared limits and health (unless Redis is configured): one SQLite file.
        runtime = os.path.dirname(worker.notify_path)
        env[SHARED_STATE_FILE_ENV] = os.path.join(runtime, "shared.db")
        # Every worker's metric snapshot, so that any of them answers /metrics for the host.
        env[HOST_METRICS_DIR_ENV] = os.path.join(runtime, "metrics")
        command = [
            sys.executable, "-m", "rtgate", "serve", "-c", self.config_path,
            "--listen-fd", str(fd), *self.worker_args,
        ]  # fmt: skip
        worker.ready = False
        worker.started_at = trio.current_time()
        process = await trio.lowlevel.open_process(
            # Its own session: a terminal's Ctrl-C reaches the supervisor only, which forwards it.
            command,
            env=env,
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        worker.process = process
        log.info("worker %d started (pid %d)", worker.number, process.pid)
        if self.stopping:
            # The stop was forwarded while this worker was being spawned: it missed it.
            process.send_signal(signal.SIGTERM)
        try:
            await process.wait()
        finally:
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    process.kill()
                    await process.wait()
        worker.ready = False
        if self.stopping:
            log.info("worker %d exited (status %s)", worker.number, process.returncode)

    async def _notify_socket(self, path: str) -> trio.socket.SocketType:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await sock.bind(path)
        return sock

    async def _listen_notify(self, worker: Worker, sock: trio.socket.SocketType) -> None:
        with sock:
            while True:
                data = await sock.recv(4096)
                fields = parse_message(data)
                now = trio.current_time()
                if fields.get("READY") == "1":
                    if not worker.ready:
                        log.info("worker %d ready", worker.number)
                    worker.ready = True
                    worker.last_ping = now
                    if all(w.ready for w in self.workers):
                        self._all_ready.set()
                if fields.get("WATCHDOG") == "1":
                    worker.last_ping = now

    async def _watch_workers(self) -> None:
        """Kill a ready worker that stopped pinging (its loop is stuck); it is then restarted."""
        while True:
            await trio.sleep(WORKER_WATCHDOG / 4)
            if self.stopping:
                continue  # draining workers are bounded by the drain timeout instead
            now = trio.current_time()
            for worker in self.workers:
                process = worker.process
                if (
                    worker.ready
                    and process is not None
                    and process.returncode is None
                    and now - worker.last_ping > WORKER_WATCHDOG
                ):
                    log.error("worker %d missed its watchdog: killing it", worker.number)
                    worker.ready = False
                    process.kill()

    # -- signals ----------------------------------------------------------------

    async def _watch_signals(self, signals: object, nursery: trio.Nursery) -> None:
        requests = StopRequests()
        async for signum in signals:  # type: ignore[attr-defined]
            if signum == signal.SIGHUP:
                if not self.stopping:
                    self._reload()
                continue
            if not requests.note(trio.current_time()):
                continue  # a copy of the same request (a signal sent to the process group)
            if requests.count == 1:
                self._begin_stop()
                nursery.start_soon(self._kill_after, self.config.server.limits.drain_seconds + 15)
            else:
                log.info("signal again: workers close their sessions now")
                self._signal_workers(signal.SIGTERM)

    def _begin_stop(self) -> None:
        log.info("draining %d workers", self.count)
        self.stopping = True
        self._stop_requested.set()
        self.notifier.stopping()
        self._close_listener()  # the kernel stops queueing connections nobody will accept
        self._signal_workers(signal.SIGTERM)

    async def _kill_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                log.error("worker %d still running after the drain: killing it", worker.number)
                worker.process.kill()

    def _reload(self) -> None:
        from rtgate.edge.server import reload_config

        self.notifier.reloading()
        try:
            self.config = reload_config(self.config_path, self.config, self.host)
        except ConfigError as exc:
            log.error("reload failed, workers keep the running configuration: %s", exc)
            self.notifier.ready("reload failed; running the previous configuration")
            return
        log.info("reload: configuration valid, telling %d workers", self.count)
        self._signal_workers(signal.SIGHUP)
        self.notifier.ready(f"{self.count} workers serving on port {self.bound_port} (reloaded)")

    def _signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                try:
                    process.send_signal(signum)
                except ProcessLookupError:
                    pass

    def _close_listener(self) -> None:
        for sock in self.listen_socks:
            sock.close()
        self.listen_socks = []


async def supervise(
    config_path: str,
    config: GatewayConfig,
    count: int,
    host: str | None = None,
    port: int | None = None,
) -> int:
    """Entry point of ``rtgate serve --workers N`` (N > 1)."""
    return await Supervisor(config_path, config, count, host=host, port=port).run()
