"""Control plane: readiness follows the pool; /admin/pool needs the master key."""

from __future__ import annotations

import orjson
import trio

from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, gateway_yaml, openai_deployment
from tests.test_ops_support import http_get
from tests.wsclient import raw_handshake

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def test_readiness_names_a_group_without_usable_deployment(
    fake_openai: FakeRealtimeServer, nursery: trio.Nursery
) -> None:
    broken = FakeRealtimeServer(api_key="sk-fake-upstream-key")
    broken.behaviour.reject_status = 500
    await nursery.start(broken.serve)
    config = (
        gateway_yaml(
            openai_deployment("good", fake_openai.base_url),
            openai_deployment("bad", broken.base_url),
        )
        + "router_settings:\n  allowed_fails: 1\n  max_ejection_percent: 100\n  cooldown_time: 60\n"
    )
    with trio.fail_after(15):
        async with open_gateway(config) as gw:
            status, body = await http_get(gw.port, "/health/readiness")
            assert status == 200 and orjson.loads(body)["status"] == "ready"
            refused, _, _ = await raw_handshake(gw.http_url + "/v1/realtime?model=bad", AUTH)
            assert refused == 503
            status, body = await http_get(gw.port, "/health/readiness")
            ready = orjson.loads(body)
            assert status == 503
            assert ready["unavailable_groups"] == ["bad"]
            assert ready["groups"] == {"good": True, "bad": False}


async def test_admin_pool_needs_the_master_key(fake_openai: FakeRealtimeServer) -> None:
    config = gateway_yaml(openai_deployment("good", fake_openai.base_url))
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            status, _ = await http_get(gw.port, "/admin/pool")
            assert status == 401
            status, _ = await http_get(
                gw.port, "/admin/pool", {"Authorization": "Bearer sk-nope-0000"}
            )
            assert status == 401
            status, body = await http_get(gw.port, "/admin/pool", AUTH)
            assert status == 200
            stats = orjson.loads(body)
            (entry,) = stats.values()
            assert entry["state"] == "closed" and entry["active_sessions"] == 0
            assert "sk-" not in body.decode()
