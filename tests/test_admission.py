"""Admission is atomic: concurrent connects never exceed a limit, and every failure gives back.

End to end through a fake OpenAI upstream whose upgrade takes a while, so many
handshakes are dialing at once; plus the pure ledger under random interleavings.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Callable

import h11
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.http11 import Request

from rtgate.config.load import parse_text
from rtgate.pool.quota import WINDOW_SECONDS, Claim, Ledger
from rtgate.session.gateway import Gateway
from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, gateway_yaml, openai_deployment
from tests.test_ops_support import free_port

MASTER = {"Authorization": f"Bearer {CLIENT_KEY}"}
TEAM_KEY = "sk-team-key-admission-000"
TEAM = {"Authorization": f"Bearer {TEAM_KEY}"}
CONNECTS = 20


async def handshake_and_hold(
    port: int,
    path: str,
    headers: dict[str, str],
    hold: trio.Event,
    answered: Callable[[int], None] = lambda status: None,
) -> int:
    """Upgrade ``path`` and report the status; a 101 keeps the connection (the session)
    open until ``hold`` is set."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=path,
        headers=[
            ("Host", f"127.0.0.1:{port}"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
            ("Sec-WebSocket-Version", "13"),
            *headers.items(),
        ],
    )
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(conn.send(request))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return 0
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse | h11.Response):
                answered(event.status_code)
                if event.status_code == 101:
                    await hold.wait()
                return event.status_code


async def connect_all(
    port: int, path: str, headers: dict[str, str], count: int = CONNECTS
) -> Counter[int]:
    """``count`` upgrades at once; statuses once every one is answered (sessions then end)."""
    hold = trio.Event()
    statuses: Counter[int] = Counter()

    def answered(status: int) -> None:
        statuses[status] += 1
        if statuses.total() == count:
            hold.set()

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(handshake_and_hold, port, path, headers, hold, answered)
    return statuses


def slow_upstream() -> FakeRealtimeServer:
    server = FakeRealtimeServer(api_key="sk-fake-upstream-key")
    server.behaviour.handshake_delay = 0.3  # every dial overlaps every other
    return server


def team_keys(line: str) -> str:
    return f"""  keys:
    - alias: team
      key: {TEAM_KEY}
      {line}"""


async def slots_free(gateway: Gateway) -> None:
    with trio.fail_after(5):
        while gateway.admission.held() or gateway.counters.sessions_active:
            await trio.sleep(0.02)


@pytest.mark.parametrize(
    ("limits", "keys", "params", "headers"),
    [
        ("    max_sessions: 2", "", "", MASTER),
        ("", team_keys("max_sessions: 2"), "", TEAM),
        ("", team_keys("rpm_limit: 2"), "", TEAM),
        ("", "", "      max_parallel_requests: 2", MASTER),
        ("", "", "      rpm: 2", MASTER),
    ],
    ids=[
        "gateway-max_sessions",
        "key-max_sessions",
        "key-rpm_limit",
        "deployment-max_parallel_requests",
        "deployment-rpm",
    ],
)
async def test_concurrent_connects_admit_exactly_the_limit(
    nursery: trio.Nursery, limits: str, keys: str, params: str, headers: dict[str, str]
) -> None:
    upstream = slow_upstream()
    await nursery.start(upstream.serve)
    config = gateway_yaml(
        openai_deployment("m", upstream.base_url, extra=params, deployment_id="dep-m"),
        limits=f"    connect_timeout: 5\n    ping_interval: 0\n{limits}",
        extra=keys,
    )
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            statuses = await connect_all(gw.port, "/v1/realtime?model=m", headers)
            await slots_free(gw.gateway)
    assert statuses == Counter({101: 2, 429: CONNECTS - 2})
    assert upstream.dials == 2  # nobody over the limit reached the provider


async def test_a_slot_is_reused_once_its_session_ends(nursery: trio.Nursery) -> None:
    upstream = slow_upstream()
    await nursery.start(upstream.serve)
    config = gateway_yaml(
        openai_deployment("m", upstream.base_url),
        limits="    connect_timeout: 5\n    ping_interval: 0",
        extra=team_keys("max_sessions: 2"),
    )
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            first = await connect_all(gw.port, "/v1/realtime?model=m", TEAM, count=6)
            await slots_free(gw.gateway)
            second = await connect_all(gw.port, "/v1/realtime?model=m", TEAM, count=6)
    assert first == second == Counter({101: 2, 429: 4})


async def test_a_failed_dial_gives_its_slots_back(nursery: trio.Nursery) -> None:
    upstream = slow_upstream()
    await nursery.start(upstream.serve)
    dead = f"http://127.0.0.1:{free_port()}"
    config = gateway_yaml(
        openai_deployment("dead", dead, deployment_id="dep-dead"),
        openai_deployment("m", upstream.base_url, deployment_id="dep-m"),
        limits="    connect_timeout: 5\n    ping_interval: 0\n    max_sessions: 2",
        extra=team_keys("max_sessions: 2\n      rpm_limit: 4"),
    )
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            failed = Counter[int]()
            for _ in range(2):  # four failed dials in all: the key's whole rpm_limit
                failed += await connect_all(gw.port, "/v1/realtime?model=dead", TEAM, count=2)
                assert gw.gateway.admission.held() == 0
            # Neither the key's sessions nor its minute window kept anything of those dials.
            ok = await connect_all(gw.port, "/v1/realtime?model=m", TEAM, count=6)
    assert failed == Counter({503: 4})
    assert ok == Counter({101: 2, 429: 4})


async def test_a_client_gone_during_the_dial_gives_its_slot_back(nursery: trio.Nursery) -> None:
    upstream = slow_upstream()
    await nursery.start(upstream.serve)
    config = gateway_yaml(
        openai_deployment("m", upstream.base_url),
        limits="    connect_timeout: 5\n    ping_interval: 0",
        extra=team_keys("max_sessions: 1"),
    )
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            with trio.move_on_after(0.1):  # the client leaves while the upstream is dialed
                await handshake_and_hold(gw.port, "/v1/realtime?model=m", TEAM, trio.Event())
            assert gw.gateway.sessions_by_key == {"team": 1}
            await slots_free(gw.gateway)
            statuses = await connect_all(gw.port, "/v1/realtime?model=m", TEAM, count=3)
    assert statuses == Counter({101: 1, 429: 2})


async def test_a_cancelled_dial_gives_every_slot_back(nursery: trio.Nursery) -> None:
    upstream = FakeRealtimeServer(api_key="sk-fake-upstream-key")
    upstream.behaviour.hang_handshake = True
    await nursery.start(upstream.serve)
    config = gateway_yaml(
        openai_deployment(
            "m", upstream.base_url, extra="      max_parallel_requests: 1", deployment_id="dep-m"
        ),
        limits="    connect_timeout: 5\n    ping_interval: 0\n    max_sessions: 1",
        extra=team_keys("max_sessions: 1\n      rpm_limit: 1"),
    )
    gateway = Gateway(parse_text(config, path="<test>", env={}).config)
    request = Request("/v1/realtime?model=m", Headers(TEAM))
    with trio.fail_after(5):
        with trio.move_on_after(0.3) as dialing:  # shutdown (or a bug) cancels the dial
            await gateway._open_session(request, "127.0.0.1")
    assert dialing.cancelled_caught
    assert gateway.admission.held() == 0
    assert gateway.sessions_by_key == {}
    assert gateway.pool.statistics(trio.current_time())["dep-m"]["active_sessions"] == 0
    # The key's one place per minute is free again too: the next admission is granted.
    ticket = await gateway.admission.admit(gateway.auth.authenticate(TEAM_KEY), "sess-next")
    await ticket.release()


async def test_rpm_limit_refusal_says_when_to_retry(nursery: trio.Nursery) -> None:
    upstream = FakeRealtimeServer(api_key="sk-fake-upstream-key")
    await nursery.start(upstream.serve)
    config = gateway_yaml(
        openai_deployment("m", upstream.base_url), extra=team_keys("rpm_limit: 1")
    )
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            assert await connect_all(gw.port, "/v1/realtime?model=m", TEAM, count=1) == {101: 1}
            await slots_free(gw.gateway)
            from tests.wsclient import raw_handshake

            status, headers, body = await raw_handshake(gw.http_url + "/v1/realtime?model=m", TEAM)
    assert status == 429
    assert b"rpm_limit" in body
    assert 50 <= int(headers["retry-after"]) <= 60


def test_rpm_limit_is_read_from_rtgate_keys() -> None:
    config = parse_text(
        gateway_yaml(openai_deployment("m", "http://127.0.0.1:1"), extra=team_keys("rpm_limit: 7")),
        path="<test>",
        env={},
    ).config
    assert config.server.keys[0].rpm_limit == 7
    from rtgate.session.auth import Authenticator

    assert Authenticator(config).authenticate(TEAM_KEY).rpm_limit == 7


# -- the pure ledger --------------------------------------------------------------------------

CLAIMS = [Claim("gateway", concurrent=3), Claim("key:a", concurrent=2, per_minute=4)]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.integers(0, 7)),
        st.tuples(st.just("end"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("wait"), st.floats(0, 40)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_ledger_never_exceeds_a_cap_and_forgets_nothing(ops: list[tuple[object, ...]]) -> None:
    ledger = Ledger()
    now = 0.0
    live: set[str] = set()
    starts: list[tuple[float, str]] = []  # kept places in the key's minute window
    for op in ops:
        if op[0] == "take":
            lease = f"s{op[1]}"
            if lease in live:
                continue
            recent = [t for t, _ in starts if t > now - WINDOW_SECONDS]
            fits = len(live) < 2 and len(recent) < 4
            refusal = ledger.take(lease, CLAIMS, now)
            assert (refusal is None) == fits
            if fits:
                live.add(lease)
                starts.append((now, lease))
        elif op[0] == "end":
            lease, started = f"s{op[1]}", bool(op[2])
            if lease in live:
                live.discard(lease)
                if not started:
                    starts = [s for s in starts if s[1] != lease]
            ledger.give_back(lease, started=started)
        else:
            now += float(op[1])  # type: ignore[arg-type]
        assert ledger.active("gateway") == ledger.active("key:a") == len(live)
        assert ledger.active("key:a") <= 2
        assert ledger.started_last_minute("key:a", now) <= 4
