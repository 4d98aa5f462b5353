"""Keys, spend and budgets end to end: the openai SDK through rtgate, keys from LiteLLM's API,
spend in the embedded SQLite database."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

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


async def _spend(http_url: str, key: str) -> float:
    status, body = await api(http_url, "GET", f"/key/info?key={key}")
    assert status == 200, body
    return float(body["info"]["spend"])


async def test_generated_key_spend_is_usage_times_prices(fake_openai: FakeRealtimeServer) -> None:
    with trio.fail_after(40):
        async with open_gateway(priced_config(fake_openai.base_url)) as gw:
            status, created = await api(gw.http_url, "POST", "/key/generate",
                                        {"key_alias": "team-a", "models": ["gpt-realtime"],
                                         "metadata": {"team": "voice"}})  # fmt: skip
            assert status == 200, created
            key = created["key"]
            assert key.startswith("sk-") and created["key_alias"] == "team-a"
            result = await trio.to_thread.run_sync(
                partial(sdk_session, gw.ws_url + "/v1", key, responses=2)
            )
            usages = result["usages"]
            assert len(usages) == 2 and usages[0]["total_tokens"] > 0
            want = sum(expected_cost(u) for u in usages)
            assert want > 0

            async def written() -> bool:
                return await _spend(gw.http_url, key) >= want * (1 - 1e-9)

            await wait_for(written)
            await trio.sleep(0.2)  # nothing more arrives: each response is charged once
            assert math.isclose(await _spend(gw.http_url, key), want, rel_tol=1e-9)
            status, logs = await api(gw.http_url, "GET", "/spend/logs?key_alias=team-a")
            assert status == 200 and len(logs) == 2
            assert {row["model_group"] for row in logs} == {"gpt-realtime"}
            assert sorted(row["total_tokens"] for row in logs) == sorted(
                u["total_tokens"] for u in usages
            )
            assert logs[0]["team_id"] == "voice" and logs[0]["session_id"]
            status, report = await api(gw.http_url, "GET", "/global/spend/report")
            assert status == 200
            assert math.isclose(report["by_key"][0]["spend"], want, rel_tol=1e-9)
            assert report["by_team"][0]["team_id"] == "voice"
            metrics = await api_text(gw.http_url + "/metrics")
            assert (
                'rtgate_spend_usd_total{key_alias="team-a",model_group="gpt-realtime"}' in metrics
            )
            assert key not in metrics and created["token_id"] not in metrics


async def api_text(url: str) -> str:
    import urllib.request

    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    return await trio.to_thread.run_sync(get)


async def test_budget_crossed_ends_session_then_refused_at_connect(
    fake_openai: FakeRealtimeServer,
) -> None:
    with trio.fail_after(40):
        async with open_gateway(priced_config(fake_openai.base_url)) as gw:
            _, created = await api(gw.http_url, "POST", "/key/generate", {"max_budget": 1e-6})
            key = created["key"]
            result = await trio.to_thread.run_sync(
                partial(sdk_session, gw.ws_url + "/v1", key, expect_close=True)
            )
            # The response finished, then the error, then the close (1008).
            assert len(result["usages"]) == 1
            assert result["error"]["code"] == "budget_exceeded"
            assert result["error"]["type"] == "budget_exceeded"
            assert result["close_code"] == 1008
            dials = fake_openai.dials
            refused = await trio.to_thread.run_sync(sdk_session_open, gw.ws_url + "/v1", key)
            assert refused["status"] == 400
            error = refused["body"]["error"]
            assert error["type"] == "budget_exceeded" and error["code"] == "400"
            assert "Budget has been exceeded" in error["message"] and "param" in error
            assert fake_openai.dials == dials  # no upstream dialed for the refused session


async def test_deleted_and_blocked_keys_are_refused(fake_openai: FakeRealtimeServer) -> None:
    with trio.fail_after(40):
        async with open_gateway(priced_config(fake_openai.base_url)) as gw:
            url = gw.ws_url + "/v1"
            _, created = await api(gw.http_url, "POST", "/key/generate", {"key_alias": "k1"})
            key = created["key"]
            assert (await trio.to_thread.run_sync(sdk_session_open, url, key))["status"] == 101
            status, row = await api(gw.http_url, "POST", "/key/block", {"key": key})
            assert status == 200 and row["blocked"] is True and row["token"] == created["token_id"]
            assert (await trio.to_thread.run_sync(sdk_session_open, url, key))["status"] == 401
            await api(gw.http_url, "POST", "/key/unblock", {"key": created["token_id"]})
            assert (await trio.to_thread.run_sync(sdk_session_open, url, key))["status"] == 101
            status, deleted = await api(gw.http_url, "POST", "/key/delete", {"keys": [key]})
            assert status == 200 and deleted["deleted_keys"] == [key]
            assert (await trio.to_thread.run_sync(sdk_session_open, url, key))["status"] == 401
            status, _ = await api(gw.http_url, "GET", f"/key/info?key={key}")
            assert status == 404


async def test_keys_and_spend_survive_a_restart(
    fake_openai: FakeRealtimeServer, tmp_path: Path
) -> None:
    config = priced_config(fake_openai.base_url, database=f"sqlite:///{tmp_path}/keys.db")
    with trio.fail_after(40):
        async with open_gateway(config) as gw:
            _, created = await api(gw.http_url, "POST", "/key/generate", {"key_alias": "kept"})
            key = created["key"]
            await trio.to_thread.run_sync(partial(sdk_session, gw.ws_url + "/v1", key))

            async def written() -> bool:
                return await _spend(gw.http_url, key) > 0

            await wait_for(written)
            spent = await _spend(gw.http_url, key)
        async with open_gateway(config) as gw:
            assert await _spend(gw.http_url, key) == spent
            opened = await trio.to_thread.run_sync(sdk_session_open, gw.ws_url + "/v1", key)
            assert opened["status"] == 101
            _, listed = await api(gw.http_url, "GET", "/key/list")
            assert listed["keys"] == [created["token_id"]] and listed["total_count"] == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/key/generate", {"max_budget": "ten"}, "max_budget"),
        ("/key/generate", {"max_budget": -1}, "max_budget"),
        ("/key/generate", {"budget_duration": "soon"}, "budget_duration"),
        ("/key/generate", {"duration": 30}, "duration"),
        ("/key/generate", {"models": "gpt-realtime"}, "models"),
        ("/key/generate", {"rpm_limit": 1.5}, "rpm_limit"),
        ("/key/generate", {"tpm_limit": True}, "tpm_limit"),
        ("/key/generate", {"metadata": []}, "metadata"),
        ("/key/generate", {"max_parallel_requests": -2}, "max_parallel_requests"),
        ("/key/generate", {"key": "not-sk"}, "key"),
        ("/key/generate", [1, 2], "body"),
        ("/key/update", {"max_budget": 3}, "key"),
        ("/key/delete", {"keys": "sk-x"}, "keys"),
        ("/key/delete", {}, "keys"),
        ("/key/block", {}, "key"),
    ],
)
async def test_malformed_key_requests_name_the_field(
    fake_openai: FakeRealtimeServer, path: str, body: object, field: str
) -> None:
    with trio.fail_after(20):
        async with open_gateway(priced_config(fake_openai.base_url)) as gw:
            status, answer = await api(gw.http_url, "POST", path, body)
            assert status == 400, answer
            assert answer["error"]["param"] == field
            assert answer["error"]["code"] == "400"
            _, listed = await api(gw.http_url, "GET", "/key/list")
            assert listed["total_count"] == 0  # nothing was half-created


async def test_key_api_needs_the_master_key(fake_openai: FakeRealtimeServer) -> None:
    with trio.fail_after(20):
        async with open_gateway(priced_config(fake_openai.base_url)) as gw:
            _, created = await api(gw.http_url, "POST", "/key/generate", {})
            for method, path in (("POST", "/key/generate"), ("GET", "/key/list"),
                                 ("GET", "/spend/logs")):  # fmt: skip
                status, answer = await api(gw.http_url, method, path, {} if method == "POST"
                                           else None, key=created["key"])  # fmt: skip
                assert status == 401 and answer["error"]["type"] == "auth_error"


async def test_config_key_session_record_carries_its_cost(
    fake_openai: FakeRealtimeServer, tmp_path: Path
) -> None:
    """Config-file keys keep working beside database keys, and their spend is logged too."""
    from rtgate.config.load import parse_text
    from rtgate.telemetry.eventlog import EventLogger

    log_path = tmp_path / "events.jsonl"
    extra = (f"  keys:\n    - alias: from-file\n      key: sk-config-file-key-0001\n"
             f"  event_log:\n    flush_interval: 0.05\n    sinks:\n"
             f"      - {{type: file, path: {log_path}}}\n")  # fmt: skip
    config = parse_text(priced_config(fake_openai.base_url, extra=extra), path="<t>").config
    logger = EventLogger.for_config(config)
    with trio.fail_after(40):
        async with open_gateway(config, event_log=logger) as gw:
            result = await trio.to_thread.run_sync(
                partial(sdk_session, gw.ws_url + "/v1", "sk-config-file-key-0001")
            )
            want = expected_cost(result["usages"][0])

            async def logged() -> bool:
                status, logs = await api(gw.http_url, "GET", "/spend/logs?key_alias=from-file")
                return status == 200 and len(logs) == 1

            await wait_for(logged)
            assert logger is not None

            async def recorded() -> bool:
                return logger.counters.sessions_queued > 0

            await wait_for(recorded)
    import orjson

    records = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]
    (session,) = [r for r in records if r["record"] == "session"]
    assert math.isclose(session["cost_usd"], want, rel_tol=1e-9)


async def test_tpm_limit_ends_the_session_then_refuses(fake_openai: FakeRealtimeServer) -> None:
    with trio.fail_after(40):
        async with open_gateway(priced_config(fake_openai.base_url)) as gw:
            _, created = await api(gw.http_url, "POST", "/key/generate", {"tpm_limit": 5})
            key = created["key"]
            result = await trio.to_thread.run_sync(
                partial(sdk_session, gw.ws_url + "/v1", key, expect_close=True)
            )
            assert result["usages"][0]["total_tokens"] > 5
            assert result["error"]["code"] == "tpm_limit_exceeded"
            assert result["close_code"] == 1008
            refused = await trio.to_thread.run_sync(sdk_session_open, gw.ws_url + "/v1", key)
            assert refused["status"] == 429
