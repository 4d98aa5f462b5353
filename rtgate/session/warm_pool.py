"""Warm pools: upstream connections opened before a client asks, handed to sessions.

Owns the I/O of the opt-in ``litellm_params.warm_pool`` setting. Per
deployment, one :class:`WarmSet` keeps ``size`` idle connections dialed with a
canonical :class:`SessionContext` (no intent, nothing forwarded); the
gateway's ``_dial`` asks :meth:`WarmPools.take` for one after the pool chose
the deployment, and dials fresh when none fits. Decisions without I/O live in
:mod:`rtgate.pool.warm_policy`; capacity and health accounting in the pool
(:meth:`rtgate.pool.router.Pool.claim_warm_dial` and friends).

Tasks, all in the nursery :meth:`WarmPools.run` opens (the server starts it):

* a maintainer per warm set: refills (with backoff), recycles connections
  before ``max_idle_seconds`` (a replacement first), pings idle ones, drops
  silent ones and every idle one while the deployment is not healthy;
* a reader per connection: it is the only reader of the socket from the dial
  until the session's first receive, so an upstream close or EOF while idle is
  seen at once (the connection is replaced) and events are kept as
  ``first_frames``. It is never cancelled while the connection can still be
  handed out, so no byte is ever lost: at hand-out the session's first receive
  takes over the reader's pending one (:class:`WarmLink`).

A connection is handed out once and never returns: the session closes it.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import attrs
import trio

from rtgate.config.model import Deployment, GatewayConfig, WarmPoolSettings
from rtgate.errors import UpstreamClosed, UpstreamConnectError, scrub
from rtgate.net.upstream_ws import WsUpstream
from rtgate.pool.router import Pool, dial_identity
from rtgate.pool.warm_policy import (
    RefillBackoff,
    dials_wanted,
    idle_frames_problem,
    is_young_death,
    recycle_at,
)
from rtgate.providers import connect_bounded, get_provider
from rtgate.providers.base import Provider, SessionContext, UpstreamLink
from rtgate.providers.websocket import WebSocketProvider, WsTarget
from rtgate.translate.base import new_id
from rtgate.wire import Frame

log = logging.getLogger("rtgate.warm")

POLL_SECONDS = 1.0
"""The maintainer re-checks at least this often (capacity frees when sessions end,
which does not wake it)."""
MIN_SLEEP_SECONDS = 0.01
CHECK_ROUNDS = 8
"""Scheduler rounds a hand-out gives the reader to digest bytes already in the socket."""
CLOSE_SECONDS = 2.0


class ConnState(enum.Enum):
    IDLE = "idle"
    CHECKING = "checking"
    """Taken out of the idle list by a hand-out that is verifying it."""
    TAKEN = "taken"
    DEAD = "dead"


class WarmConnection:
    """One pre-opened upstream connection and its reader's hand-off slot."""

    def __init__(self, link: WsUpstream, dialed_at: float, dial_seconds: float) -> None:
        self.link = link
        self.dialed_at = dialed_at
        self.dial_seconds = dial_seconds
        """How long its dial took (a replacement is started that much before it expires)."""
        self.state = ConnState.IDLE
        self.pinging = False
        self.read_scope = trio.CancelScope()
        self.reader_done = trio.Event()
        self.result: list[Frame] | UpstreamClosed | None = None
        self.result_ready = trio.Event()

    def last_received(self) -> float:
        return self.link.conn.last_received

    def deliver(self, result: list[Frame] | UpstreamClosed) -> None:
        """The reader's pending receive finished after the hand-out: give it to the session."""
        if self.result is None:
            self.result = result
            self.result_ready.set()

    async def stop_reading(self) -> None:
        """End the reader (the connection is being closed) and wait until it has let go."""
        if not self.reader_done.is_set():
            self.read_scope.cancel()
            await self.reader_done.wait()

    def readable(self) -> bool | None:
        """Are bytes (or an EOF) waiting to be read? None if the connection cannot tell."""
        return self.link.conn.input_waiting()


class WarmLink:
    """A handed-out warm connection, as the session's :class:`UpstreamLink`.

    Its first ``receive`` is the reader's pending one (so nothing read or being
    read is lost); after that every method is the connection's own, bound
    directly, so the relay's hot path pays nothing for the hand-out.
    """

    first_frames: Sequence[Frame]
    receive: Callable[[], Coroutine[Any, Any, list[Frame]]]
    send: Callable[[Sequence[Frame]], Coroutine[Any, Any, None]]
    ping: Callable[[], Coroutine[Any, Any, None]]
    pending_bytes: Callable[[], int]

    def __init__(self, conn: WarmConnection) -> None:
        link = conn.link
        self.warm = conn
        self._link = link
        self.first_frames = link.first_frames
        self.receive = self._first_receive
        self.send = link.send
        self.ping = link.ping
        self.pending_bytes = link.pending_bytes

    async def _first_receive(self) -> list[Frame]:
        conn = self.warm
        await conn.result_ready.wait()
        self.receive = self._link.receive
        result = conn.result
        if isinstance(result, UpstreamClosed):
            raise UpstreamClosed(result.code, result.reason)
        assert result is not None
        return result

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.warm.stop_reading()
        await self._link.aclose(code, reason)

    async def abandon(self, code: int = 1000, reason: str = "") -> None:
        await self._link.abandon(code, reason)


@attrs.define(eq=False)
class _Dial:
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    counted: bool = True
    """Still counted by the pool as a warm dial in flight (settled exactly once)."""

    def settle(self) -> bool:
        """Stop counting this dial; True only the first time (the caller then tells the pool)."""
        first, self.counted = self.counted, False
        return first


class WarmSet:
    """One deployment's warm connections, dials in flight and refill backoff."""

    def __init__(self, dep: Deployment, provider: WebSocketProvider, config: GatewayConfig) -> None:
        assert dep.warm_pool is not None
        self.dep = dep
        self.settings: WarmPoolSettings = dep.warm_pool
        self.provider = provider
        limits = config.server.limits
        self.ctx = SessionContext(
            session_id=new_id("warm"),
            model_group=dep.model_name,
            connect_timeout=limits.connect_timeout,
            max_message_bytes=limits.max_message_bytes,
        )
        self.target: WsTarget = provider.target(dep, self.ctx)
        self.idle: deque[WarmConnection] = deque()
        self.dials: set[_Dial] = set()
        self.backoff = RefillBackoff()
        self.wake = trio.Event()
        self.scope = trio.CancelScope()
        """The maintainer's and its dials' scope; cancelled when the set is retired or drained."""

    # Derived from the settings in force, so a reload's new max_idle_seconds applies to
    # connections already open.
    def expires_at(self, conn: WarmConnection) -> float:
        return conn.dialed_at + self.settings.max_idle_seconds

    def recycle_at(self, conn: WarmConnection) -> float:
        return recycle_at(conn.dialed_at, conn.dial_seconds, self.settings)

    def serves(self, ctx: SessionContext) -> bool:
        """Would a fresh dial for ``ctx`` be the very connection this set holds?"""
        return (
            ctx.max_message_bytes == self.ctx.max_message_bytes
            and self.provider.target(self.dep, ctx) == self.target
        )


@attrs.define
class WarmCounters:
    """Plain counters the metrics endpoint reads, by deployment id."""

    handouts: dict[str, int] = attrs.field(factory=dict)
    misses: dict[tuple[str, str], int] = attrs.field(factory=dict)
    """(deployment, reason): ``empty``, ``mismatch`` (the session's dial target differs)."""
    discards: dict[tuple[str, str], int] = attrs.field(factory=dict)
    """(deployment, reason): ``expired``, ``closed``, ``error_event``, ``silent``,
    ``cooldown``, ``displaced``, ``resize``, ``reload``, ``drain``, ``overflow``."""
    dials: dict[tuple[str, str], int] = attrs.field(factory=dict)
    """(deployment, ``ok`` or ``failed``)."""


def _bump(counts: dict[tuple[str, str], int], key: tuple[str, str]) -> None:
    counts[key] = counts.get(key, 0) + 1


class _Host(Protocol):
    """What the warm pools read from the gateway (both change on reload)."""

    pool: Pool
    config: GatewayConfig
    secrets: tuple[str, ...]


class WarmPools:
    """Every deployment's warm set; owned by the gateway, run in the server's nursery."""

    def __init__(self, host: _Host, *, providers: Callable[[str], Provider] = get_provider) -> None:
        self._host = host
        self._providers = providers
        self._sets: dict[str, WarmSet] = {}
        self._nursery: trio.Nursery | None = None
        self._draining = False
        self.counters = WarmCounters()

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep every configured warm set filled until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.reconfigure(self._host.config)
            task_status.started()
            await trio.sleep_forever()

    def reconfigure(self, config: GatewayConfig) -> None:
        """Adopt a (re)loaded config: sets of removed or changed deployments are closed,
        unchanged ones keep their connections (a new size or age applies at once)."""
        if self._nursery is None or self._draining:
            return
        wanted = {d.id: d for d in config.deployments if d.warm_pool is not None}
        for dep_id, ws in list(self._sets.items()):
            new = wanted.get(dep_id)
            if new is None or not _same_dial(ws, new, config):
                self._retire(ws, "reload")
                del self._sets[dep_id]
            else:
                assert new.warm_pool is not None
                ws.dep, ws.settings = new, new.warm_pool
                ws.wake.set()
        for dep_id, dep in wanted.items():
            if dep_id in self._sets:
                continue
            provider = self._providers(dep.provider)
            if not isinstance(provider, WebSocketProvider):
                continue  # the loader refuses these; a test's config object might not
            ws = WarmSet(dep, provider, config)
            self._sets[dep_id] = ws
            self._nursery.start_soon(self._maintain, ws, name=f"warm pool {dep_id}")

    async def drain(self) -> None:
        """Shutdown: stop refilling and close every idle connection politely (1001)."""
        self._draining = True
        async with trio.open_nursery() as closers:
            for ws in self._sets.values():
                ws.scope.cancel()
                for conn in list(ws.idle):
                    self._forget(ws, conn, "drain")
                    closers.start_soon(self._close, conn, 1001, "going away")
        self._sets.clear()

    def _retire(self, ws: WarmSet, reason: str) -> None:
        ws.scope.cancel()  # the maintainer and its dials (each uncounts itself)
        for conn in list(ws.idle):
            self._discard(ws, conn, reason)

    # -- hand-out ----------------------------------------------------------------------

    async def take(
        self, dep: Deployment, ctx: SessionContext, reserved_at: float
    ) -> UpstreamLink | None:
        """An idle, verified connection of ``dep`` for this session, or None (dial fresh).

        ``reserved_at`` is when the session's pool slot was reserved (its rpm entry,
        dropped since nothing new is dialed).
        """
        ws = self._sets.get(dep.id)
        if ws is None or ws.dep != dep:
            return None
        if not ws.idle:
            _bump(self.counters.misses, (dep.id, "empty"))
            return None
        if not ws.serves(ctx):
            _bump(self.counters.misses, (dep.id, "mismatch"))
            return None
        pool = self._host.pool
        while ws.idle:
            conn = ws.idle.popleft()  # the oldest: the one closest to being recycled
            if trio.current_time() >= ws.expires_at(conn):
                self._discard(ws, conn, "expired")
                continue
            conn.state = ConnState.CHECKING
            try:
                alive = await self._still_open(conn)
            except BaseException:
                if conn.state is ConnState.CHECKING:  # the client left: it stays warm
                    conn.state = ConnState.IDLE
                    ws.idle.appendleft(conn)
                raise
            if not alive:
                continue  # the reader saw it close and has discarded it
            conn.state = ConnState.TAKEN
            pool.warm_taken(dep, reserved_at)
            self.counters.handouts[dep.id] = self.counters.handouts.get(dep.id, 0) + 1
            ws.wake.set()  # refill
            return WarmLink(conn)
        _bump(self.counters.misses, (dep.id, "empty"))
        return None

    async def _still_open(self, conn: WarmConnection) -> bool:
        """Let the reader digest whatever the upstream sent before the hand-out: a close
        or EOF already in the socket then discards the connection instead."""
        for _ in range(CHECK_ROUNDS):
            if conn.state is ConnState.DEAD:
                return False
            if not conn.readable():
                return True
            await trio.lowlevel.checkpoint()
        return conn.state is not ConnState.DEAD

    async def shed(self, dep: Deployment, count: int) -> None:
        """Close ``count`` warm connections of ``dep`` (idle ones first, then dials in
        flight) before a session dials fresh, so the deployment's cap holds."""
        ws = self._sets.get(dep.id)
        if ws is None:
            return
        victims: list[WarmConnection] = []
        while count > 0 and ws.idle:
            conn = ws.idle.popleft()
            self._forget(ws, conn, "displaced")
            victims.append(conn)
            count -= 1
        for dial in list(ws.dials):
            if count <= 0:
                break
            if dial.settle():
                self._host.pool.warm_dial_abandoned(ws.dep)
                dial.scope.cancel()
                count -= 1
        # Closed before the session's own dial starts: the upstream never sees more.
        for conn in victims:
            with trio.move_on_after(CLOSE_SECONDS):
                await conn.link.abandon(1000, "capacity needed")

    # -- visibility ----------------------------------------------------------------------

    def idle_counts(self) -> dict[str, tuple[str, int]]:
        """Per deployment id: (model group, idle warm connections)."""
        return {d: (ws.dep.model_name, len(ws.idle)) for d, ws in self._sets.items()}

    # -- maintenance ---------------------------------------------------------------------

    async def _maintain(self, ws: WarmSet) -> None:
        with ws.scope:
            async with trio.open_nursery() as tasks:
                while True:
                    wake_at = self._tend(ws, trio.current_time(), tasks)
                    ws.wake = trio.Event()
                    with trio.move_on_at(wake_at):
                        await ws.wake.wait()

    def _tend(self, ws: WarmSet, now: float, tasks: trio.Nursery) -> float:
        """One maintenance pass; returns when the next one is due."""
        pool = self._host.pool
        settings = ws.settings
        next_at = now + POLL_SECONDS
        for conn in list(ws.idle):
            if now >= ws.expires_at(conn):
                self._discard(ws, conn, "expired")
        if not pool.may_keep_warm(ws.dep, now):
            for conn in list(ws.idle):
                self._discard(ws, conn, "cooldown")
            return next_at
        interval = settings.ping_interval_seconds
        if interval > 0:
            timeout = self._host.config.server.limits.ping_timeout
            for conn in list(ws.idle):
                quiet = now - conn.last_received()
                if quiet >= interval + timeout:
                    self._discard(ws, conn, "silent")
                elif quiet >= interval and not conn.pinging:
                    conn.pinging = True
                    tasks.start_soon(self._ping, ws, conn)
                else:
                    next_at = min(next_at, conn.last_received() + interval)
        fresh = [c for c in ws.idle if now < ws.recycle_at(c)]
        for conn in fresh[: max(len(fresh) - settings.size, 0)]:
            self._discard(ws, conn, "resize")
        fresh = fresh[max(len(fresh) - settings.size, 0) :]
        want = dials_wanted(settings.size, len(fresh), len(ws.dials))
        if want and not self._draining:
            if ws.backoff.ready(now):
                for _ in range(want):
                    if not pool.claim_warm_dial(ws.dep, now):
                        break  # at capacity or rpm: retried on the next pass
                    dial = _Dial()
                    ws.dials.add(dial)
                    tasks.start_soon(self._dial, ws, dial)
            else:
                next_at = min(next_at, ws.backoff.not_before)
        for conn in ws.idle:
            recycle = ws.recycle_at(conn)
            next_at = min(next_at, recycle if now < recycle else ws.expires_at(conn))
        return max(next_at, now + MIN_SLEEP_SECONDS)

    async def _dial(self, ws: WarmSet, dial: _Dial) -> None:
        pool = self._host.pool
        dep = ws.dep
        started = trio.current_time()
        link: WsUpstream | None = None
        try:
            with dial.scope:
                link = await connect_bounded(ws.provider.connect_websocket, dep, ws.ctx)
        except UpstreamConnectError as exc:
            secrets = self._host.secrets
            self._dial_failed(ws, dial, exc.kind, exc.retry_after, scrub(str(exc), secrets))
            return
        except Exception:
            log.exception("warm dial of deployment %s crashed", dep.id)
            self._dial_failed(ws, dial, "error", None, "internal error")
            return
        except BaseException:
            if dial.settle():
                pool.warm_dial_abandoned(dep)
            raise
        finally:
            ws.dials.discard(dial)
        if link is None:
            return  # shed while dialing (already uncounted)
        if not dial.counted or ws.scope.cancel_called:  # shed, retired or drained meanwhile
            if dial.settle():
                pool.warm_dial_abandoned(dep)
            with trio.move_on_after(CLOSE_SECONDS):
                await link.aclose(1000, "not needed")
            return
        now = trio.current_time()
        dial.settle()
        pool.warm_dial_done(dep, now, ok=True, handshake_seconds=now - started)
        _bump(self.counters.dials, (dep.id, "ok"))
        ws.backoff.succeeded()
        conn = WarmConnection(link, now, now - started)
        ws.idle.append(conn)
        assert self._nursery is not None
        self._nursery.start_soon(self._read, ws, conn)
        ws.wake.set()

    def _dial_failed(
        self, ws: WarmSet, dial: _Dial, kind: str, retry_after: float | None, message: str
    ) -> None:
        now = trio.current_time()
        if dial.settle():
            self._host.pool.warm_dial_done(
                ws.dep, now, ok=False, kind=kind, retry_after=retry_after
            )
        _bump(self.counters.dials, (ws.dep.id, "failed"))
        ws.backoff.failed(now, ws.settings)
        log.warning("warm dial failed: deployment=%s kind=%s error=%s", ws.dep.id, kind, message)

    async def _ping(self, ws: WarmSet, conn: WarmConnection) -> None:
        # Shielded: a TLS write cut by a cancellation would break the stream, and the
        # connection may be handed out meanwhile (writes are serialised by its lock).
        try:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self._host.config.server.limits.ping_timeout):
                    await conn.link.ping()
        except UpstreamClosed:
            self._died(ws, conn, "closed")
        finally:
            conn.pinging = False

    async def _read(self, ws: WarmSet, conn: WarmConnection) -> None:
        """The connection's only reader until a session's first receive takes over."""
        link = conn.link
        try:
            with conn.read_scope:
                while True:
                    try:
                        frames = await link.receive()
                    except UpstreamClosed as exc:
                        if conn.state is ConnState.TAKEN:
                            conn.deliver(exc)
                        else:
                            self._died(ws, conn, "closed")
                        return
                    if conn.state is ConnState.TAKEN:
                        conn.deliver(frames)
                        return
                    if conn.state is ConnState.DEAD:
                        return
                    problem = idle_frames_problem(frames, len(link.first_frames))
                    if problem is not None:
                        self._died(ws, conn, problem)
                        return
                    link.first_frames.extend(frames)
        finally:
            if conn.state is ConnState.TAKEN:
                conn.deliver(UpstreamClosed(1001, "gateway stopped"))
            conn.reader_done.set()

    # -- removal ---------------------------------------------------------------------------

    def _forget(self, ws: WarmSet, conn: WarmConnection, reason: str) -> bool:
        """Take an idle (or checking) connection out of service; False if it was not."""
        if conn.state not in (ConnState.IDLE, ConnState.CHECKING):
            return False
        conn.state = ConnState.DEAD
        try:
            ws.idle.remove(conn)
        except ValueError:
            pass  # popped by a hand-out that was checking it
        self._host.pool.warm_closed(ws.dep)
        _bump(self.counters.discards, (ws.dep.id, reason))
        log.debug("warm connection of %s discarded: %s", ws.dep.id, reason)
        return True

    def _discard(self, ws: WarmSet, conn: WarmConnection, reason: str) -> None:
        """Close an idle connection rtgate no longer wants (in the background)."""
        if self._forget(ws, conn, reason) and self._nursery is not None:
            self._nursery.start_soon(self._close, conn, 1000, "")

    def _died(self, ws: WarmSet, conn: WarmConnection, reason: str) -> None:
        """The upstream ended (or spoiled) an idle connection: replace it."""
        if not self._forget(ws, conn, reason):
            return
        if is_young_death(trio.current_time() - conn.dialed_at, ws.settings):
            ws.backoff.failed(trio.current_time(), ws.settings)
        if self._nursery is not None:
            self._nursery.start_soon(self._close, conn, 1000, "")
        ws.wake.set()

    async def _close(self, conn: WarmConnection, code: int, reason: str) -> None:
        with trio.move_on_after(CLOSE_SECONDS):
            await conn.stop_reading()
            await conn.link.aclose(code, reason)


def _same_dial(ws: WarmSet, new: Deployment, config: GatewayConfig) -> bool:
    """Would ``new`` dial exactly what ``ws`` holds? (Routing knobs and warm settings
    aside; a new message size limit or connect timeout means new connections.)"""
    limits = config.server.limits
    if (limits.max_message_bytes, limits.connect_timeout) != (
        ws.ctx.max_message_bytes,
        ws.ctx.connect_timeout,
    ):
        return False
    return dial_identity(ws.dep) == dial_identity(new)
