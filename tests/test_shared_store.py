"""Both shared stores keep the same model: all-or-none admission, leases, trials, verdicts.

One contract, run against the SQLite store (several processes' connections to one
file) and a real redis-server on a free loopback port; plus the Redis connection
settings read the way LiteLLM reads them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from rtgate.config.load import parse_text
from rtgate.pool.quota import Claim
from rtgate.shared.redis_store import RedisStore, client_from_settings
from rtgate.shared.sqlite_store import SqliteStore
from rtgate.shared.store import SharedStore, StoreUnavailable
from tests.conftest import gateway_yaml, openai_deployment
from tests.shared_support import needs_redis, redis_server

KEY = Claim("key:team", concurrent=2, per_minute=3)
GATEWAY = Claim("gateway", concurrent=3)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=needs_redis)])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[list[SharedStore]]:
    """Two stores over the same state, as two processes would hold them."""
    if request.param == "sqlite":
        path = str(tmp_path / "shared.db")
        pair: list[SharedStore] = [SqliteStore(path, "host:1"), SqliteStore(path, "host:2")]
        yield pair
        for store in pair:
            store.close()
        return
    async with redis_server(tmp_path) as server:
        pair = [RedisStore(server.client(), "a:1"), RedisStore(server.client(), "b:2")]
        yield pair
        for store in pair:
            store.close()


async def test_admission_is_all_or_none_across_processes(stores: list[SharedStore]) -> None:
    one, two = stores
    assert one.take("s1", [GATEWAY, KEY], 30).refusal is None
    assert two.take("s2", [GATEWAY, KEY], 30).refusal is None
    refused = one.take("s3", [GATEWAY, KEY], 30).refusal
    assert refused is not None and (refused.scope, refused.cap) == ("key:team", "concurrent")
    # The refused take left nothing behind in the gateway scope: a key-less session fits.
    assert two.take("s4", [GATEWAY], 30).refusal is None
    assert one.take("s5", [GATEWAY], 30).refusal is not None
    view = one.view()
    assert view.active == {"gateway": 3, "key:team": 2}
    assert view.by_member[two.member] == {"gateway": 2, "key:team": 1}


async def test_give_back_frees_the_slot_and_an_unstarted_one_its_minute_place(
    stores: list[SharedStore],
) -> None:
    one, two = stores
    assert one.take("s1", [KEY], 30).refusal is None
    assert two.take("s2", [KEY], 30).refusal is None
    two.give_back("s2", ["key:team"], started=False)  # its dial failed
    one.give_back("s1", ["key:team"], started=True)
    assert one.take("s3", [KEY], 30).refusal is None
    assert one.take("s4", [KEY], 30).refusal is None  # two starts counted: s1, s3
    one.give_back("s3", ["key:team"], started=True)
    refused = one.take("s5", [KEY], 30).refusal  # s1, s3, s4: three starts this minute
    assert refused is not None and refused.cap == "per_minute"
    assert 55 <= refused.retry_after <= 60


async def test_a_lease_not_renewed_expires_and_a_renewed_one_stays(
    stores: list[SharedStore],
) -> None:
    one, two = stores
    claim = Claim("deployment:d", concurrent=1)
    assert one.take("s1", [claim], 0.4).refusal is None
    assert two.take("s2", [claim], 0.4).refusal is not None
    for _ in range(4):  # renewed past its first expiry
        await trio.sleep(0.2)
        assert one.renew({"s1": ["deployment:d"]}, 0.4) >= 1
    assert two.take("s2", [claim], 0.4).refusal is not None
    await trio.sleep(0.6)  # the holder died: nobody renews
    assert two.take("s2", [claim], 0.4).refusal is None


async def test_renewal_adds_back_leases_the_store_lost(stores: list[SharedStore]) -> None:
    one, two = stores
    claim = Claim("key:team", concurrent=1)
    # A lease taken while the store was out of reach exists only in its process.
    assert one.renew({"s1": ["key:team"]}, 30) >= 1
    refused = two.take("s2", [claim], 30).refusal
    assert refused is not None and refused.cap == "concurrent"


async def test_one_half_open_trial_at_a_time_across_processes(stores: list[SharedStore]) -> None:
    one, two = stores
    one.eject("d", 0.3, 1)
    cooling = two.take("s1", [], 30, deployment="d").refusal
    assert cooling is not None and cooling.cap == "cooling" and 0 < cooling.retry_after <= 0.3
    assert [(v.deployment, v.level) for v in two.verdicts(["d", "other"])] == [("d", 1)]
    await trio.sleep(0.35)
    trial = one.take("s2", [], 30, deployment="d")
    assert trial.refusal is None and trial.trial
    assert two.take("s3", [], 30, deployment="d").refusal is not None  # the trial runs
    one.end_trial("d", "s2")  # abandoned: another may try
    again = two.take("s3", [], 30, deployment="d")
    assert again.trial
    two.restore("d")
    assert one.verdicts(["d"]) == []
    healthy = one.take("s4", [], 30, deployment="d")
    assert healthy.refusal is None and not healthy.trial


@needs_redis
async def test_redis_settings_have_litellm_meaning(tmp_path: Path) -> None:
    async with redis_server(tmp_path, password="s3cret-redis-pw") as server:
        by_parts = f"""router_settings:
  redis_host: 127.0.0.1
  redis_port: {server.port}
  redis_password: os.environ/REDIS_PW"""
        by_url = """router_settings:
  redis_url: os.environ/REDIS_URL
  redis_host: 10.255.255.1  # the URL wins, as in LiteLLM"""
        env = {"REDIS_PW": "s3cret-redis-pw", "REDIS_URL": server.url}
        for extra in (by_parts, by_url):
            text = gateway_yaml(openai_deployment("m", "http://127.0.0.1:1")) + extra
            config = parse_text(text, path="<test>", env=env).config
            assert config.router.redis_configured()
            assert "s3cret-redis-pw" in config.secret_values()
            assert client_from_settings(config.router).ping()
        only_host = gateway_yaml(openai_deployment("m", "http://127.0.0.1:1")) + (
            "router_settings:\n  redis_host: 127.0.0.1"
        )
        loaded = parse_text(only_host, path="<test>", env={})
        assert not loaded.config.router.redis_configured()
        assert any("redis_port" in w for w in loaded.warnings)


def test_rediss_url_is_tls() -> None:
    text = gateway_yaml(openai_deployment("m", "http://127.0.0.1:1")) + (
        "router_settings:\n  redis_url: rediss://:pw@cache.example:6380/2"
    )
    client = client_from_settings(parse_text(text, path="<test>", env={}).config.router)
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 2)


def test_an_unreachable_redis_is_store_unavailable() -> None:
    from tests.test_ops_support import free_port

    text = gateway_yaml(openai_deployment("m", "http://127.0.0.1:1")) + (
        f"router_settings:\n  redis_host: 127.0.0.1\n  redis_port: {free_port()}"
    )
    store = RedisStore(
        client_from_settings(parse_text(text, path="<test>", env={}).config.router), "x:1"
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.take("s1", [KEY], 30)
    assert time.monotonic() - started < 5


def test_sqlite_minute_counts_follow_the_window_and_survive_a_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQLite store keeps a count per scope instead of counting the window's rows:
    starts leave it when they age out or are given back unstarted, and a reopened file
    rebuilds it from the rows."""
    import rtgate.shared.sqlite_store as sqlite_store

    clock = [1_000_000.0]
    monkeypatch.setattr(sqlite_store.time, "time", lambda: clock[0])
    path = str(tmp_path / "shared.db")
    store = SqliteStore(path, "host:1")
    rate = Claim("key:rate", per_minute=3)
    for n in range(3):
        assert store.take(f"s{n}", [rate], 30).refusal is None
        store.give_back(f"s{n}", ["key:rate"], started=True)
        clock[0] += 10
    refused = store.take("s3", [rate], 30).refusal
    assert refused is not None and refused.cap == "per_minute"
    assert 29 <= refused.retry_after <= 31  # the oldest start leaves the window at +60 s
    clock[0] += 31  # the first start is 61 s old: one place is free
    assert store.take("s4", [rate], 30).refusal is None
    store.give_back("s4", ["key:rate"], started=False)  # its dial failed: not counted
    assert store.take("s5", [rate], 30).refusal is None
    store.close()
    reopened = SqliteStore(path, "host:2")
    refused = reopened.take("s6", [rate], 30).refusal
    assert refused is not None and refused.cap == "per_minute"
    reopened.close()


def test_workers_opening_a_new_file_together_all_open_it(tmp_path: Path) -> None:
    """``--workers N`` start together: each opens the fresh file, switches it to WAL and
    writes the schema; "database is locked" from a neighbour doing the same was a worker
    that died at start-up (seen in the workers benchmark)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(40):  # the race shows in about one round of ten
        path = str(tmp_path / f"shared-{round_}.db")
        start = context.Barrier(6)
        results = context.Queue()
        workers = [
            context.Process(target=_open_after, args=(path, start, results, n)) for n in range(6)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        assert outcomes == ["ok"] * 6, outcomes


def _open_after(path: str, start: Any, results: Any, n: int) -> None:
    start.wait()
    try:
        SqliteStore(path, f"host:{n}").close()
    except StoreUnavailable as exc:
        results.put(str(exc))
        return
    results.put("ok")
