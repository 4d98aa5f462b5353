"""Two gateways on one real PostgreSQL cluster: keys and spend shared, the database lost
and back mid-run (spend buffered, written once)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial

import pytest
import trio

from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.governance_support import (
    api,
    expected_cost,
    priced_config,
    sdk_session,
    sdk_session_open,
    wait_for,
)
from tests.pg_support import PgCluster


@pytest.fixture
def postgres() -> Iterator[PgCluster]:
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def _info(http_url: str, key: str) -> dict[str, object]:
    status, body = await api(http_url, "GET", f"/key/info?key={key}")
    assert status == 200, body
    info: dict[str, object] = body["info"]
    return info


async def test_two_gateways_share_keys_and_spend(
    fake_openai: FakeRealtimeServer, postgres: PgCluster
) -> None:
    config = priced_config(fake_openai.base_url, database=postgres.url)
    with trio.fail_after(60):
        async with open_gateway(config) as a, open_gateway(config) as b:
            _, created = await api(a.http_url, "POST", "/key/generate", {"key_alias": "shared"})
            key = created["key"]
            # Usable on the other host at once (a key never seen there is looked up).
            result = await trio.to_thread.run_sync(partial(sdk_session, b.ws_url + "/v1", key))
            want = expected_cost(result["usages"][0])

            async def charged() -> bool:
                return float((await _info(a.http_url, key))["spend"]) > 0  # type: ignore[arg-type]

            await wait_for(charged)
            assert math.isclose(float((await _info(a.http_url, key))["spend"]), want,  # type: ignore[arg-type]
                                rel_tol=1e-9)  # fmt: skip
            # Deleted on A: refused on B within its key refresh, with no restart.
            await api(a.http_url, "POST", "/key/delete", {"keys": [key]})

            async def refused() -> bool:
                opened = await trio.to_thread.run_sync(sdk_session_open, b.ws_url + "/v1", key)
                return bool(opened["status"] == 401)

            await wait_for(refused, timeout=5)


async def test_database_lost_mid_run_spend_buffered_then_written_once(
    fake_openai: FakeRealtimeServer, postgres: PgCluster
) -> None:
    config = priced_config(fake_openai.base_url, database=postgres.url)
    with trio.fail_after(90):
        async with open_gateway(config) as gw:
            _, unbudgeted = await api(gw.http_url, "POST", "/key/generate", {"key_alias": "free"})
            _, budgeted = await api(gw.http_url, "POST", "/key/generate",
                                    {"key_alias": "capped", "max_budget": 100})  # fmt: skip
            await trio.to_thread.run_sync(postgres.stop)
            # A running-as-usual session of a known key: its spend waits in memory.
            result = await trio.to_thread.run_sync(
                partial(sdk_session, gw.ws_url + "/v1", unbudgeted["key"])
            )
            want = expected_cost(result["usages"][0])

            async def down() -> bool:
                _, body = await api(gw.http_url, "GET", "/health/readiness")
                return bool(
                    body["db"] == "disconnected" and body["database"]["buffered_spend_records"]
                )

            await wait_for(down)
            # The documented policy: a budgeted key's new sessions wait for the database.
            opened = await trio.to_thread.run_sync(
                sdk_session_open, gw.ws_url + "/v1", budgeted["key"]
            )
            assert opened["status"] == 503
            assert opened["body"]["error"]["code"] == "database_unavailable"
            await trio.to_thread.run_sync(postgres.start)

            async def written() -> bool:
                status, logs = await api(gw.http_url, "GET", "/spend/logs?key_alias=free")
                return status == 200 and len(logs) == 1

            await wait_for(written, timeout=30)
            await trio.sleep(0.5)
            _, logs = await api(gw.http_url, "GET", "/spend/logs?key_alias=free")
            assert len(logs) == 1  # written once
            info = await _info(gw.http_url, unbudgeted["key"])
            assert math.isclose(float(info["spend"]), want, rel_tol=1e-9)  # type: ignore[arg-type]
            _, body = await api(gw.http_url, "GET", "/health/readiness")
            assert body["db"] == "connected"
