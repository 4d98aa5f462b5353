"""WarmPools over socket pairs with a virtual clock: refill, recycling, keepalive, dead
connections, the hand-off (no byte lost), capacity, reload and drain.

The provider here dials a ``socketpair`` after a simulated handshake delay, so every
time-dependent rule runs under ``autojump_clock`` while the WebSocket code is real.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from rtgate.config.model import (
    Deployment,
    GatewayConfig,
    Limits,
    RouterSettings,
    ServerSettings,
    WarmPoolSettings,
)
from rtgate.errors import UpstreamClosed, UpstreamConnectError
from rtgate.net.fastframes import encode_text
from rtgate.net.upstream_ws import WsUpstream
from rtgate.net.wsconn import ConnectionClosed, WsConnection
from rtgate.pool.router import Pool
from rtgate.providers.base import Provider, SessionContext
from rtgate.providers.websocket import WebSocketProvider, WsTarget
from rtgate.session.warm_pool import WarmLink, WarmPools

CREATED = b'{"type":"session.created","session":{"id":"sess_up"}}'
DELAY = 0.3


SOCKETS: list[socket.socket] = []


@pytest.fixture(autouse=True)
def close_sockets() -> Iterator[None]:
    yield
    while SOCKETS:
        SOCKETS.pop().close()


class Peer:
    """The provider's end of one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock  # the stdlib object, for writes that must not checkpoint
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.ws = WsConnection(stream, ServerProtocol(state=State.OPEN))
        self.received: list[Any] = []
        self.close_code: int | None = None

    async def serve(self) -> None:
        """Read like a live provider (answers pings) until the connection ends."""
        try:
            while True:
                self.received.extend(await self.ws.receive())
        except ConnectionClosed as exc:
            self.close_code = exc.code

    def send_raw_now(self, data: bytes) -> None:
        """Bytes into the socket at once, without a checkpoint (nothing else runs first)."""
        self.sock.send(data)


@attrs.define(eq=False)
class PairProvider(WebSocketProvider):
    """A WebSocket provider whose dial is a socketpair after ``delay`` virtual seconds."""

    greets: bool = True
    delay: float = DELAY
    fail_kind: str | None = None
    serve: bool = True
    peers: list[Peer] = attrs.field(factory=list)
    peer_of: dict[int, Peer] = attrs.field(factory=dict)
    """By ``id`` of the client-side link."""
    dial_times: list[float] = attrs.field(factory=list)
    nursery: trio.Nursery | None = None
    on_connected: Callable[[], None] | None = None
    """Runs as the dial returns, with no checkpoint in between."""
    name = "openai"

    @property
    def greets_first(self) -> bool:  # type: ignore[override]
        return self.greets

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        query = "intent=transcription" if ctx.intent else f"model={deployment.model}"
        headers = {"authorization": "Bearer k", **ctx.forwarded_headers}
        return WsTarget(f"ws://{deployment.api_base}/realtime?{query}", headers)

    async def connect_websocket(self, deployment: Deployment, ctx: SessionContext) -> WsUpstream:
        self.dial_times.append(trio.current_time())
        await trio.sleep(self.delay)
        if self.fail_kind is not None:
            raise UpstreamConnectError("fake refusal", kind=self.fail_kind)
        a, b = socket.socketpair()
        SOCKETS.extend((a, b))
        a.setblocking(False)
        b.setblocking(False)
        peer = Peer(b)
        self.peers.append(peer)
        client = ClientProtocol(parse_uri("ws://fake/"), state=State.OPEN)
        link = WsUpstream(
            WsConnection(trio.SocketStream(trio.socket.from_stdlib_socket(a)), client)
        )
        self.peer_of[id(link)] = peer
        if self.greets:
            await peer.ws.send([CREATED])
            await link.read_first(ctx.connect_timeout)
        if self.serve and self.nursery is not None:
            self.nursery.start_soon(peer.serve)
        if self.on_connected is not None:
            self.on_connected()
        return link


@attrs.define
class Host:
    pool: Pool
    config: GatewayConfig
    secrets: tuple[str, ...] = ()


def deployment(**warm: Any) -> Deployment:
    cap = warm.pop("cap", None)
    return Deployment(
        model_name="g", provider="openai", model="m", id="d", api_base="up",
        max_parallel_requests=cap, warm_pool=WarmPoolSettings(**{"size": 2, **warm}),
    )  # fmt: skip


def config(*deps: Deployment, ping_timeout: float = 5.0, **router: Any) -> GatewayConfig:
    limits = Limits(ping_timeout=ping_timeout, connect_timeout=5.0)
    return GatewayConfig(
        deployments=deps,
        server=ServerSettings(limits=limits),
        router=RouterSettings(**{"max_ejection_percent": 100, **router}),
    )


async def start(
    nursery: trio.Nursery, cfg: GatewayConfig, provider: PairProvider
) -> tuple[WarmPools, Host]:
    provider.nursery = nursery
    host = Host(Pool(cfg), cfg)
    pools = WarmPools(host, providers=_only(provider))
    await nursery.start(pools.run)
    return pools, host


async def filled(
    nursery: trio.Nursery, cfg: GatewayConfig, provider: PairProvider
) -> tuple[WarmPools, Host]:
    """:func:`start`, then wait until every deployment holds its warm pool's size."""
    pools, host = await start(nursery, cfg, provider)
    size = sum(d.warm_pool.size for d in cfg.deployments if d.warm_pool is not None)
    await until(lambda: idle(pools) == size)
    return pools, host


def _only(provider: PairProvider) -> Callable[[str], Provider]:
    return lambda name: provider


def idle(pools: WarmPools) -> int:
    return sum(n for _, n in pools.idle_counts().values())


async def until(predicate: Callable[[], bool], limit: float = 60.0) -> None:
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(0.01)


def ctx(**kw: Any) -> SessionContext:
    return SessionContext(session_id="sess_c", model_group="g", connect_timeout=5.0, **kw)


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The test ends within 1000 virtual seconds (under autojump a hang jumps there)."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        with trio.fail_after(1000):
            await test(*args, **kwargs)

    return run


def accounting(host: Host, dep: Deployment) -> tuple[int, int]:
    state = host.pool._states[dep.id]
    return state.warm_idle, state.warm_dialing


@bounded
async def test_fills_to_size_and_hands_out_without_a_dial(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider()
    dep = deployment()
    pools, host = await filled(nursery, config(dep), provider)
    assert len(provider.dial_times) == 2
    assert accounting(host, dep) == (2, 0)
    started = trio.current_time()
    link = await pools.take(dep, ctx(), started)
    assert isinstance(link, WarmLink)
    assert trio.current_time() - started < DELAY  # no handshake paid
    assert list(link.first_frames) == [CREATED]
    assert len(provider.dial_times) == 2
    assert accounting(host, dep) == (1, 0) or accounting(host, dep) == (1, 1)
    await until(lambda: idle(pools) == 2)  # refilled
    assert len(provider.dial_times) == 3
    assert pools.counters.handouts == {"d": 1}
    await link.aclose()


@bounded
async def test_handed_over_reads_lose_nothing_and_repeat_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Frames sent while idle, at the very moment of the hand-out, split across the
    hand-out and after it all reach the session once, in order."""
    provider = PairProvider()
    dep = deployment(size=1)
    pools, _ = await filled(nursery, config(dep), provider)
    peer = provider.peers[0]
    await peer.ws.send([b'{"type":"a"}'])  # while idle: kept for the session
    await trio.sleep(1)
    peer.send_raw_now(encode_text(b'{"type":"b"}', mask=False))  # in the socket at hand-out
    link = await pools.take(dep, ctx(), trio.current_time())
    assert link is not None
    split = encode_text(b'{"type":"c"}', mask=False)
    peer.send_raw_now(split[:5])  # half a frame: the reader's pending receive holds it
    await trio.sleep(1)
    peer.send_raw_now(split[5:])
    await peer.ws.send([b'{"type":"d"}'])
    got = list(link.first_frames)
    while len(got) < 5:
        got.extend(await link.receive())
    assert got == [CREATED, b'{"type":"a"}', b'{"type":"b"}', b'{"type":"c"}', b'{"type":"d"}']
    await link.send([b'{"type":"session.update"}'])
    await until(lambda: peer.received == [b'{"type":"session.update"}'])
    await link.aclose(1000, "done")
    await until(lambda: peer.close_code == 1000)


@pytest.mark.parametrize("how", ["eof", "close_frame", "error_event"])
@bounded
async def test_a_connection_the_upstream_ended_is_never_handed_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, how: str
) -> None:
    provider = PairProvider(serve=False)
    dep = deployment()
    pools, host = await filled(nursery, config(dep), provider)
    order = [provider.peer_of[id(c.link)] for c in pools._sets["d"].idle]
    doomed, alive = order  # the hand-out tries the oldest first
    # The upstream ends the oldest connection and the client arrives in the same
    # instant: the bytes are in the socket, the watcher has not run yet.
    if how == "eof":
        doomed.sock.shutdown(socket.SHUT_WR)
    elif how == "close_frame":
        doomed.ws.protocol.send_close(1001, "going away")
        doomed.send_raw_now(b"".join(doomed.ws.protocol.data_to_send()))
    else:
        doomed.send_raw_now(encode_text(b'{"type":"error","error":{"code":"x"}}', mask=False))
    link = await pools.take(dep, ctx(), trio.current_time())
    assert isinstance(link, WarmLink)
    await link.send([b'{"type":"hello"}'])
    assert alive.ws.protocol.state is State.OPEN
    assert await alive.ws.receive() == [b'{"type":"hello"}']
    reason = "error_event" if how == "error_event" else "closed"
    assert pools.counters.discards == {("d", reason): 1}
    await until(lambda: idle(pools) == 2)  # both replaced
    assert len(provider.dial_times) == 4
    assert accounting(host, dep)[0] == 2


@bounded
async def test_upstream_close_while_idle_is_replaced_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider(serve=False)
    dep = deployment(size=1, refill_delay_seconds=7)
    pools, _ = await filled(nursery, config(dep), provider)
    await trio.sleep(30)
    await provider.peers[0].ws.close(1000, "idle timeout")
    closed_at = trio.current_time()
    await until(lambda: len(provider.dial_times) == 2)
    assert provider.dial_times[1] - closed_at < 0.1  # an old connection: no backoff
    await until(lambda: idle(pools) == 1)
    # A young one closed at once looks like an upstream shedding idle sockets: back off.
    await provider.peers[1].ws.close(1000, "idle timeout")
    closed_at = trio.current_time()
    await until(lambda: len(provider.dial_times) == 3)
    assert provider.dial_times[2] - closed_at == pytest.approx(7.0, abs=0.1)


@bounded
async def test_recycled_before_max_idle_and_never_empty_meanwhile(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider()
    dep = deployment(size=1, max_idle_seconds=60, ping_interval_seconds=0)
    pools, host = await filled(nursery, config(dep), provider)
    lowest = 1
    for _ in range(2000):  # 200 virtual seconds
        await trio.sleep(0.1)
        lowest = min(lowest, idle(pools))
    assert lowest == 1
    assert pools.counters.discards[("d", "expired")] >= 3
    link = await pools.take(dep, ctx(), trio.current_time())
    assert isinstance(link, WarmLink)
    assert trio.current_time() - link.warm.dialed_at < 60
    assert accounting(host, dep)[0] == idle(pools)  # the pool's count never drifts


@bounded
async def test_silent_upstream_is_dropped_and_an_answering_one_kept(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    answering = PairProvider()
    dep = deployment(size=1, ping_interval_seconds=5, max_idle_seconds=100)
    await filled(nursery, config(dep, ping_timeout=5), answering)
    await trio.sleep(90)
    assert len(answering.dial_times) == 1  # pinged and answered for 90 s
    assert answering.peers[0].ws.last_received > 80  # the pings arrived

    silent = PairProvider(serve=False)  # never reads: no pongs
    pools2, _ = await start(nursery, config(deployment(size=1, ping_interval_seconds=5)), silent)
    await until(lambda: idle(pools2) == 1)
    first = trio.current_time()
    await until(lambda: len(silent.dial_times) == 2)
    assert pools2.counters.discards == {("d", "silent"): 1}
    assert 9.5 <= trio.current_time() - first <= 11.5


@bounded
async def test_failed_warm_dials_back_off_feed_health_and_stop_in_cooldown(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider(fail_kind="refused", delay=0.0)
    dep = deployment(size=1, refill_delay_seconds=1, refill_delay_max_seconds=4)
    pools, host = await start(nursery, config(dep, allowed_fails=4, cooldown_time=100.0), provider)
    await trio.sleep(50)
    gaps = [b - a for a, b in zip(provider.dial_times, provider.dial_times[1:], strict=False)]
    assert [round(g) for g in gaps] == [1, 2, 4]  # then ejected: nothing during the cooldown
    state = host.pool._states["d"]
    assert state.ejections == 1 and state.last_error == "refused"
    assert pools.counters.dials == {("d", "failed"): 4}
    assert accounting(host, dep) == (0, 0)


@bounded
async def test_shed_closes_idle_connections_before_returning(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider(serve=False)
    dep = deployment(size=2, cap=2)
    pools, host = await filled(nursery, config(dep), provider)
    oldest = provider.peer_of[id(pools._sets["d"].idle[0].link)]
    sel = host.pool.select("g", trio.current_time())
    assert sel.next(trio.current_time()) == dep  # a session arrives at the cap
    assert host.pool.warm_excess(dep) == 1
    await pools.shed(dep, 1)
    assert oldest.sock.recv(1024, socket.MSG_PEEK)  # its close is already on the wire
    assert host.pool.warm_excess(dep) == 0
    await trio.sleep(5)
    assert idle(pools) == 1  # no refill: the cap is full
    assert len(provider.dial_times) == 2
    assert pools.counters.discards == {("d", "displaced"): 1}


@bounded
async def test_a_session_whose_target_differs_dials_fresh(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider()
    dep = deployment(size=1)
    pools, _ = await filled(nursery, config(dep), provider)
    assert await pools.take(dep, ctx(intent="transcription"), 0.0) is None
    assert (
        await pools.take(dep, ctx(forwarded_headers={"openai-safety-identifier": "u"}), 0.0) is None
    )
    assert await pools.take(deployment(size=1, max_idle_seconds=5), ctx(), 0.0) is None
    assert pools.counters.misses == {("d", "mismatch"): 2}
    assert idle(pools) == 1


@bounded
async def test_gemini_style_connection_sends_nothing_until_the_session_does(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider(greets=False)
    dep = deployment(size=1)
    pools, _ = await filled(nursery, config(dep), provider)
    await trio.sleep(60)
    peer = provider.peers[0]
    assert peer.received == []  # no setup: that is the client's
    link = await pools.take(dep, ctx(), trio.current_time())
    assert link is not None and list(link.first_frames) == []
    await link.send([b'{"setup":{}}'])
    await until(lambda: peer.received == [b'{"setup":{}}'])
    await peer.ws.send([b'{"setupComplete":{}}'])
    assert await link.receive() == [b'{"setupComplete":{}}']
    await link.aclose()


@bounded
async def test_a_client_leaving_during_the_check_leaves_the_connection_warm(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider(serve=False)
    dep = deployment(size=1)
    pools, host = await filled(nursery, config(dep), provider)
    provider.peers[0].send_raw_now(encode_text(b'{"type":"x"}', mask=False))
    with trio.CancelScope() as scope:
        scope.cancel()
        await pools.take(dep, ctx(), trio.current_time())
    assert idle(pools) == 1 and accounting(host, dep)[0] == 1
    link = await pools.take(dep, ctx(), trio.current_time())
    assert link is not None
    assert list(link.first_frames) == [CREATED, b'{"type":"x"}']


@bounded
async def test_reload_keeps_unchanged_and_closes_changed_sets_drain_says_1001(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider()
    dep = deployment(size=2)
    pools, host = await filled(nursery, config(dep), provider)
    reweighted = attrs.evolve(dep, weight=3.0, warm_pool=WarmPoolSettings(size=1))
    new = config(reweighted)
    host.pool.reconfigure(new, trio.current_time())
    host.config = new
    pools.reconfigure(new)
    await until(lambda: idle(pools) == 1)  # resized, same connections
    assert len(provider.dial_times) == 2
    moved = attrs.evolve(reweighted, api_base="elsewhere")
    new = config(moved)
    host.pool.reconfigure(new, trio.current_time())
    host.config = new
    pools.reconfigure(new)
    await until(lambda: sum(p.close_code == 1000 for p in provider.peers) == 2)
    await until(lambda: idle(pools) == 1)
    assert len(provider.dial_times) == 3
    assert pools.counters.discards[("d", "reload")] == 1
    await pools.drain()
    await until(lambda: provider.peers[2].close_code == 1001)
    await trio.sleep(200)
    assert len(provider.dial_times) == 3  # nothing dialed after the drain
    assert accounting(host, moved) == (0, 0)


@bounded
async def test_a_reloaded_max_idle_age_applies_to_open_connections(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider()
    dep = deployment(size=1, max_idle_seconds=120, ping_interval_seconds=0)
    pools, host = await filled(nursery, config(dep), provider)
    await trio.sleep(50)
    younger = attrs.evolve(dep, warm_pool=WarmPoolSettings(size=1, max_idle_seconds=30))
    new = config(younger)
    host.pool.reconfigure(new, trio.current_time())
    host.config = new
    pools.reconfigure(new)
    reloaded_at = trio.current_time()
    await until(lambda: len(provider.dial_times) == 2)
    assert provider.dial_times[1] - reloaded_at < 0.1  # 50 s old is past 30: replaced now
    await until(lambda: provider.peers[0].close_code == 1000)
    assert pools.counters.discards == {("d", "expired"): 1}


@bounded
async def test_a_dial_that_lands_as_the_set_is_drained_is_closed_not_kept(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider(serve=False, greets=False)
    dep = deployment(size=1)
    pools, host = await start(nursery, config(dep), provider)
    # The drain cancels the set in the same instant the dial returns its connection.
    provider.on_connected = lambda: pools._sets["d"].scope.cancel()
    await until(lambda: len(provider.peers) == 1)
    await trio.sleep(1)
    assert idle(pools) == 0 and accounting(host, dep) == (0, 0)
    sock = provider.peers[0].sock
    assert sock.recv(1024)[:1] == b"\x88"  # a close frame (unmasked length follows)
    assert sock.recv(1024) == b""  # and the socket closed


@bounded
async def test_aclose_of_a_handed_out_link_stops_the_warm_reader(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    provider = PairProvider()
    dep = deployment(size=1)
    pools, _ = await filled(nursery, config(dep), provider)
    link = await pools.take(dep, ctx(), trio.current_time())
    assert isinstance(link, WarmLink)
    assert not link.warm.reader_done.is_set()  # still the reader's pending receive
    await link.aclose(1000, "client left")
    assert link.warm.reader_done.is_set()
    await until(lambda: provider.peers[0].close_code == 1000)
    with pytest.raises(UpstreamClosed):
        await link.receive()
