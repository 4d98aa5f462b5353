"""Warm pools end to end: real clients -> rtgate -> fake upstreams whose handshake is slow.

The fakes count dials and open connections, so a test can tell that a session
used a pre-opened connection (no dial, no handshake paid) without timing it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import trio

from rtgate.control.metrics import render
from rtgate.edge.configfile import parse_text
from rtgate.edge.server import ServerHandle
from rtgate.testing.fake_gemini import FakeGeminiServer
from rtgate.testing.fake_upstream import FakeBehaviour, FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, gateway_yaml, openai_deployment
from tests.test_gateway_e2e import _run_openai_sdk
from tests.wsclient import connect, raw_handshake, recv_json, send_json

HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}"}
HANDSHAKE_DELAY = 0.3


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def idle(gw: ServerHandle) -> int:
    return sum(n for _, n in gw.gateway.warm.idle_counts().values())


async def slow_fake(nursery: trio.Nursery, **behaviour: object) -> FakeRealtimeServer:
    fake = FakeRealtimeServer(
        api_key=UPSTREAM_KEY,
        behaviour=FakeBehaviour(handshake_delay=HANDSHAKE_DELAY, **behaviour),  # type: ignore[arg-type]
    )
    await nursery.start(fake.serve)
    return fake


def warm_deployment(fake: FakeRealtimeServer, warm: str, extra: str = "") -> str:
    return openai_deployment(
        "gpt-realtime", fake.base_url, extra=f"      warm_pool: {warm}\n{extra}".rstrip()
    )


async def one_session(gw: ServerHandle, query: str = "model=gpt-realtime") -> None:
    async with connect(gw.ws_url + "/v1/realtime?" + query, HEADERS) as ws:
        assert (await recv_json(ws))["type"] == "session.created"
        await send_json(ws, {"type": "session.update", "session": {"type": "realtime"}})
        assert (await recv_json(ws))["type"] == "session.updated"


async def test_openai_sdk_gets_session_created_from_a_warm_connection(
    nursery: trio.Nursery,
) -> None:
    fake = await slow_fake(nursery)
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(warm_deployment(fake, "{size: 2}"))) as gw:
            await until(lambda: idle(gw) == 2)
            assert fake.dials == 2
            types = await trio.to_thread.run_sync(
                _run_openai_sdk, gw.ws_url + "/v1", "gpt-realtime"
            )
            counters = gw.gateway.warm.counters
            assert counters.handouts == {_id(fake): 1}
            assert counters.misses == {}
            assert gw.gateway.counters.dial_seconds.count == 0  # no session dialed
            await until(lambda: idle(gw) == 2)  # refilled behind it
            metrics = render(gw.gateway)[0].decode()
    assert types[0] == "session.created" and types[-1] == "response.done"
    assert fake.dials == 3
    assert "rtgate_warm_idle_connections{" in metrics
    assert "rtgate_warm_handouts_total{" in metrics


async def test_fresh_dial_when_the_pool_is_empty_or_the_session_differs(
    nursery: trio.Nursery,
) -> None:
    fake = await slow_fake(nursery)
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(warm_deployment(fake, "1"))) as gw:
            await until(lambda: idle(gw) == 1)
            async with trio.open_nursery() as clients:  # two at once: one warm, one fresh
                clients.start_soon(one_session, gw)
                clients.start_soon(one_session, gw)
            await until(lambda: idle(gw) == 1)
            await one_session(gw, "model=gpt-realtime&intent=transcription")
            misses = {reason: n for (_, reason), n in gw.gateway.warm.counters.misses.items()}
            assert misses == {"empty": 1, "mismatch": 1}
            assert gw.gateway.counters.dial_seconds.count == 2
    assert "intent=transcription" in fake.paths[-1]
    assert all("intent" not in p for p in fake.paths[:-1])


async def test_sessions_and_warm_connections_stay_within_max_parallel_requests(
    nursery: trio.Nursery,
) -> None:
    fake = await slow_fake(nursery)
    config = gateway_yaml(warm_deployment(fake, "2", "      max_parallel_requests: 2"))
    with trio.fail_after(30):
        async with open_gateway(config) as gw:
            await until(lambda: idle(gw) == 2)
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", HEADERS) as a:
                assert (await recv_json(a))["type"] == "session.created"
                await trio.sleep(1)  # no refill: one session plus one warm fill the cap
                assert idle(gw) == 1 and fake.dials == 2
                # A session that cannot use the warm one displaces it, never exceeds the cap.
                url = gw.ws_url + "/v1/realtime?model=gpt-realtime&intent=transcription"
                async with connect(url, HEADERS) as b:
                    assert (await recv_json(b))["type"] == "session.created"
                    assert idle(gw) == 0
                    status, _, _ = await raw_handshake(
                        gw.ws_url + "/v1/realtime?model=gpt-realtime", HEADERS
                    )
                    assert status == 429  # two sessions: the cap is full
            await until(lambda: idle(gw) == 2)
    assert fake.open_max <= 2
    assert gw.gateway.warm.counters.discards[(_id(fake), "displaced")] == 1


async def test_connections_the_upstream_closed_while_idle_are_never_handed_out(
    nursery: trio.Nursery,
) -> None:
    for idle_close in ((1000, "idle timeout"), None):
        fake = FakeRealtimeServer(
            api_key=UPSTREAM_KEY,
            behaviour=FakeBehaviour(close_idle_after=0.3, idle_close=idle_close),
        )
        await nursery.start(fake.serve)
        warm = "{size: 2, refill_delay_seconds: 0.05, refill_delay_max_seconds: 0.1}"
        with trio.fail_after(30):
            async with open_gateway(gateway_yaml(warm_deployment(fake, warm))) as gw:
                for pause in (0.0, 0.35, 0.1, 0.45, 0.0, 0.5, 0.2, 0.4):
                    await trio.sleep(pause)  # often just as the upstream closes idle ones
                    await one_session(gw)  # each works: session.update is answered
        assert fake.idle_closes >= 4
        assert gw.gateway.warm.counters.handouts


async def test_gemini_warm_socket_sends_no_setup_until_the_client_arrives(
    nursery: trio.Nursery,
) -> None:
    fake = FakeGeminiServer()
    await nursery.start(fake.serve)
    deployment = f"""  - model_name: gemini-live
    litellm_params:
      model: gemini/gemini-live-2.5-flash
      api_key: {fake.api_key}
      api_base: {fake.base_url}
      setup_wait_seconds: 0.5
      warm_pool: 1"""
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(deployment)) as gw:
            await until(lambda: idle(gw) == 1)
            await trio.sleep(0.5)
            assert fake.dials == 1 and fake.received == [[]] and fake.setups == []
            async with connect(gw.ws_url + "/v1/realtime?model=gemini-live", HEADERS) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                await send_json(ws, {"type": "session.update", "session": {"type": "realtime"}})
                assert (await recv_json(ws))["type"] == "session.updated"
                await until(lambda: len(fake.setups) == 1)
                assert len(fake.received[0]) == 1  # the setup went over the warm socket
                assert all(not later for later in fake.received[1:])  # refills wait too
            await until(lambda: idle(gw) == 1)
    assert fake.dials == 2


async def test_failover_when_the_warm_deployment_fails(nursery: trio.Nursery) -> None:
    broken = await slow_fake(nursery, reject_status=500)
    healthy = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(healthy.serve)
    config = gateway_yaml(
        warm_deployment(broken, "{size: 2, refill_delay_seconds: 0.05}"),
        openai_deployment("gpt-realtime", healthy.base_url),
        extra="router_settings:\n  allowed_fails: 2\n  cooldown_time: 60\n",
    )
    with trio.fail_after(30):
        async with open_gateway(config) as gw:
            await until(lambda: gw.gateway.pool.statistics(0.0)[_id(broken)]["state"] == "ejected")
            dials = broken.dials
            for _ in range(4):
                await one_session(gw)
            assert broken.dials == dials  # cooling down: no warm dial, no session dial
            assert idle(gw) == 0
    assert healthy.sessions == 4 and broken.sessions == 0


def _id(fake: FakeRealtimeServer) -> str:
    """The id the loader derives for the fake's deployment (no model_info.id)."""
    digest = hashlib.sha256(fake.base_url.rstrip("/").encode()).hexdigest()[:10]
    return f"gpt-realtime:openai:gpt-realtime:{digest}"


async def test_reload_closes_changed_sets_and_shutdown_closes_the_rest_with_1001(
    nursery: trio.Nursery,
) -> None:
    first = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    second = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(first.serve)
    await nursery.start(second.serve)
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(warm_deployment(first, "2"))) as gw:
            await until(lambda: idle(gw) == 2)
            same = gateway_yaml(warm_deployment(first, "2", "      weight: 3"))
            gw.gateway.reload(parse_text(same, env={}).config)
            await trio.sleep(0.3)
            assert first.dials == 2 and first.open_now == 2  # unchanged: kept
            moved = gateway_yaml(warm_deployment(second, "2"))
            gw.gateway.reload(parse_text(moved, env={}).config)
            await until(lambda: first.open_now == 0 and idle(gw) == 2)
            assert sorted(first.close_codes) == [1000, 1000]
        await until(lambda: second.open_now == 0)
    assert sorted(second.close_codes) == [1001, 1001]
