"""Warm pools end to end: rtgate -> fake upstreams with a slow handshake, real clients."""

from __future__ import annotations

import trio

from rtgate.testing.fake_upstream import FakeBehaviour, FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, gateway_yaml, openai_deployment
from tests.wsclient import connect, recv_json

HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}"}
HANDSHAKE_DELAY = 0.3


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_session_takes_a_warm_connection(nursery: trio.Nursery) -> None:
    fake = FakeRealtimeServer(
        api_key=UPSTREAM_KEY, behaviour=FakeBehaviour(handshake_delay=HANDSHAKE_DELAY)
    )
    await nursery.start(fake.serve)
    config = gateway_yaml(
        openai_deployment("gpt-realtime", fake.base_url, extra="      warm_pool: {size: 2}")
    )
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            await wait_for(
                lambda: (
                    gw.gateway.warm.idle_counts()
                    and next(iter(gw.gateway.warm.idle_counts().values()))[1] == 2
                )
            )
            assert fake.sessions == 2
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", HEADERS) as ws:
                event = await recv_json(ws)
                assert event["type"] == "session.created"
                assert fake.dials == 2  # it did not dial: it used a pre-opened one
                await ws.send_message('{"type":"session.update","session":{"type":"realtime"}}')
                event = await recv_json(ws)
                assert event["type"] == "session.updated"
            assert gw.gateway.warm.counters.handouts
            await wait_for(lambda: fake.sessions == 3)
