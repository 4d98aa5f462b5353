"""Keepalive: rtgate pings idle clients and drops the ones that stopped answering."""

from __future__ import annotations

import trio

from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, gateway_yaml, openai_deployment
from tests.test_faults_support import RawWs
from tests.wsclient import connect, recv_json, send_json

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def _config(base_url: str) -> str:
    limits = "    ping_interval: 0.3\n    ping_timeout: 0.3"
    return gateway_yaml(openai_deployment("gpt-realtime", base_url), limits=limits)


async def test_silent_client_is_dropped_and_upstream_closed(
    fake_openai: FakeRealtimeServer,
) -> None:
    with trio.fail_after(15):
        async with open_gateway(_config(fake_openai.base_url)) as gw:
            client = await RawWs.open(gw.port, headers=AUTH)
            try:
                # Read nothing, answer no ping: the peer looks dead.
                with trio.fail_after(5):
                    while not fake_openai.close_codes:
                        await trio.sleep(0.05)
            finally:
                await trio.aclose_forcefully(client.stream)
    assert fake_openai.close_codes == [1001]


async def test_idle_client_that_answers_pings_stays(fake_openai: FakeRealtimeServer) -> None:
    with trio.fail_after(15):
        async with open_gateway(_config(fake_openai.base_url)) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                await trio.sleep(2)  # several ping intervals with no traffic
                await send_json(ws, {"type": "session.update", "session": {"type": "realtime"}})
                assert (await recv_json(ws))["type"] == "session.updated"
    assert fake_openai.close_codes == [1000]
