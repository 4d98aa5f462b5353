"""Limits and health that hold across processes and hosts, end to end.

Real ``rtgate serve`` processes (two "hosts" on one redis-server; one process with
``--workers 2`` and no Redis) in front of one fake OpenAI upstream whose upgrade
takes a while, so many handshakes dial at once. Two in-process gateways on one
Redis stand for two hosts where the test must count the upstream's dials.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import orjson
import trio

from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, gateway_yaml, openai_deployment
from tests.shared_support import RedisServer, needs_redis, redis_server
from tests.test_admission import TEAM, handshake_and_hold, slow_upstream, team_keys
from tests.test_ops_support import free_port, http_get, parse_metrics, rtgate_process, value
from tests.wsclient import raw_handshake

PATH = "/v1/realtime?model=m"


def host_config(upstream: FakeRealtimeServer, port: int, *, router: str = "", lease: float = 15,
                key_line: str = "max_sessions: 2") -> str:  # fmt: skip
    return gateway_yaml(
        openai_deployment("m", upstream.base_url, deployment_id="dep-m"),
        limits="    connect_timeout: 5\n    ping_interval: 0\n    drain_seconds: 1",
        extra=f"""  host: 127.0.0.1
  port: {port}
  lease_seconds: {lease}
{team_keys(key_line)}
{router}""",
    )


def ejecting_config(upstream: FakeRealtimeServer, server: RedisServer, *, cooldown: float) -> str:
    """One deployment on one Redis, ejected at its first failure for ``cooldown`` s."""
    return gateway_yaml(
        openai_deployment("m", upstream.base_url, deployment_id="dep-m"),
        extra=f"""{redis_router(server)}
  allowed_fails: 1
  max_ejection_percent: 100
  cooldown_time: {cooldown:g}""",
    )


def redis_router(server: RedisServer) -> str:
    return f"router_settings:\n  redis_host: 127.0.0.1\n  redis_port: {server.port}"


async def statuses_across(
    nursery: trio.Nursery, ports: list[int], count: int
) -> tuple[Counter[int], trio.Event]:
    """``count`` upgrades at once, round-robin over ``ports``; returns the statuses once all
    are answered, and the event that ends the sessions that were admitted."""
    hold = trio.Event()
    statuses: Counter[int] = Counter()
    everyone = trio.Event()

    def answered(status: int) -> None:
        statuses[status] += 1
        if statuses.total() == count:
            everyone.set()

    for i in range(count):
        nursery.start_soon(handshake_and_hold, ports[i % len(ports)], PATH, TEAM, hold, answered)
    await everyone.wait()
    return statuses, hold


async def key_sessions_everywhere(port: int) -> int:
    """The key's sessions as the store counts them (``/admin/pool`` of any process)."""
    status, body = await http_get(port, "/admin/pool", {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert status == 200
    return int(orjson.loads(body)["dep-m"]["shared"]["active_sessions"])


@needs_redis
async def test_two_hosts_on_one_redis_admit_exactly_the_key_limit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream = slow_upstream()
    await nursery.start(upstream.serve)
    with trio.fail_after(60):
        async with redis_server(tmp_path) as server:
            ports = [free_port(), free_port()]
            (tmp_path / "a").mkdir()
            (tmp_path / "b").mkdir()
            async with (
                rtgate_process(tmp_path / "a", host_config(upstream, ports[0],
                               router=redis_router(server)), ports[0]),
                rtgate_process(tmp_path / "b", host_config(upstream, ports[1],
                               router=redis_router(server)), ports[1]),
            ):  # fmt: skip
                async with trio.open_nursery() as clients:
                    first, hold = await statuses_across(clients, ports, 12)
                    assert await key_sessions_everywhere(ports[1]) == 2
                    hold.set()
                with trio.fail_after(10):  # released slots are reused, on either host
                    while await key_sessions_everywhere(ports[0]):
                        await trio.sleep(0.05)
                async with trio.open_nursery() as clients:
                    second, hold = await statuses_across(clients, ports, 12)
                    hold.set()
    assert first == second == Counter({101: 2, 429: 10})


async def test_workers_without_redis_admit_exactly_the_key_limit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream = slow_upstream()
    await nursery.start(upstream.serve)
    port = free_port()
    with trio.fail_after(60):
        async with rtgate_process(tmp_path, host_config(upstream, port), port, "--workers", "2"):
            async with trio.open_nursery() as clients:
                first, hold = await statuses_across(clients, [port], 20)
                _, body = await http_get(port, "/metrics")
                hold.set()
            with trio.fail_after(10):  # every worker sees the slots come back
                while await key_sessions_everywhere(port):
                    await trio.sleep(0.05)
            async with trio.open_nursery() as clients:
                second, hold = await statuses_across(clients, [port], 20)
                hold.set()
    assert first == second == Counter({101: 2, 429: 18})
    assert upstream.dials == 4
    assert value(parse_metrics(body), "rtgate_shared_state_up", store="host") == 1


@needs_redis
async def test_a_killed_hosts_slots_come_back_within_its_lease(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream = slow_upstream()
    await nursery.start(upstream.serve)
    with trio.fail_after(60):
        async with redis_server(tmp_path) as server:
            ports = [free_port(), free_port()]
            (tmp_path / "a").mkdir()
            (tmp_path / "b").mkdir()
            router = redis_router(server)
            async with (
                rtgate_process(tmp_path / "a", host_config(upstream, ports[0], router=router,
                               lease=1.5), ports[0]) as doomed,
                rtgate_process(tmp_path / "b", host_config(upstream, ports[1], router=router,
                               lease=1.5), ports[1]),
            ):  # fmt: skip
                async with trio.open_nursery() as clients:
                    held, _ = await statuses_across(clients, [ports[0]], 2)
                    assert held == {101: 2}
                    status, _, _ = await raw_handshake(f"http://127.0.0.1:{ports[1]}{PATH}", TEAM)
                    assert status == 429  # host A holds both of the key's slots
                    os.killpg(doomed.process.pid, signal.SIGKILL)  # no release, no goodbye
                    killed = trio.current_time()
                    while True:
                        status, _, _ = await raw_handshake(
                            f"http://127.0.0.1:{ports[1]}{PATH}", TEAM
                        )
                        if status == 101:
                            break
                        assert status == 429
                        await trio.sleep(0.1)
                    back_after = trio.current_time() - killed
                    clients.cancel_scope.cancel()
    assert back_after < 1.5 + 1.0  # the lease, plus a handshake's time


@needs_redis
async def test_a_deployment_failing_on_one_host_is_not_dialed_by_another(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    failing = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    failing.behaviour.reject_status = 500
    await nursery.start(failing.serve)
    with trio.fail_after(30):
        async with redis_server(tmp_path) as server:
            config = ejecting_config(failing, server, cooldown=30)
            master = {"Authorization": f"Bearer {CLIENT_KEY}"}
            async with open_gateway(config) as host_a, open_gateway(config) as host_b:
                status_a, _, _ = await raw_handshake(host_a.http_url + PATH, master)
                assert failing.dials == 1  # host A dialed, failed, ejected
                status_b, headers_b, body_b = await raw_handshake(host_b.http_url + PATH, master)
                ready_b = host_b.gateway.pool.readiness(trio.current_time())
                stats = host_b.gateway.pool.statistics(trio.current_time())["dep-m"]
    assert status_a == 503
    assert status_b == 503
    assert failing.dials == 1  # host B never dialed it during the cooldown
    assert b"cooling down" in body_b
    assert 25 <= int(headers_b["retry-after"]) <= 30
    assert ready_b == {"m": False}
    assert stats["state"] == "ejected"


@needs_redis
async def test_one_half_open_trial_at_a_time_across_hosts(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """After an ejection's cooldown, sessions arriving on both hosts at once make one dial
    (the half-open trial); the others are refused while it runs, then it restores the
    deployment for both hosts."""
    upstream = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    upstream.behaviour.reject_status = 500
    await nursery.start(upstream.serve)
    with trio.fail_after(40):
        async with redis_server(tmp_path) as server:
            config = ejecting_config(upstream, server, cooldown=1)
            async with open_gateway(config) as host_a, open_gateway(config) as host_b:
                master = {"Authorization": f"Bearer {CLIENT_KEY}"}
                status, _, _ = await raw_handshake(host_a.http_url + PATH, master)
                assert status == 503 and upstream.dials == 1  # ejected for everyone
                await trio.sleep(1.3)  # the cooldown is over: the next dial is a trial
                upstream.behaviour.reject_status = None
                upstream.behaviour.handshake_delay = 1.0  # the trial takes a while
                statuses: Counter[int] = Counter()
                hold = trio.Event()
                done = trio.Event()

                def answered(code: int) -> None:
                    statuses[code] += 1
                    if statuses.total() == 8:
                        done.set()

                ports = [host_a.port, host_b.port]
                for i in range(8):
                    nursery.start_soon(
                        handshake_and_hold, ports[i % 2], PATH, master, hold, answered
                    )
                await done.wait()
                trial_dials = upstream.dials - 1
                # The trial succeeded: both hosts dial the deployment again.
                upstream.behaviour.handshake_delay = 0.0
                after = []
                for host in (host_a, host_b):
                    code, _, _ = await raw_handshake(host.http_url + PATH, master)
                    after.append(code)
                hold.set()
    assert trial_dials == 1
    assert statuses == Counter({101: 1, 503: 7})
    assert after == [101, 101]


@needs_redis
async def test_redis_stopped_and_restarted_mid_run(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream = slow_upstream()
    await nursery.start(upstream.serve)
    async with redis_server(tmp_path) as server:
        router = redis_router(server)
        config_a = host_config(upstream, 0, router=router, lease=1.5)
        with trio.fail_after(60):
            async with open_gateway(config_a) as host, trio.open_nursery() as clients:
                one, hold_one = await statuses_across(clients, [host.port], 1)
                assert one == {101: 1}
                shared = host.gateway.admission.shared
                assert shared is not None and shared.up
                await server.stop()  # Redis goes away with a session running
                outage, hold_outage = await statuses_across(clients, [host.port], 4)
                # Local share of the key's 2 (one process: all of it), never unlimited.
                assert outage == {101: 1, 429: 3}
                status, body = await http_get(host.port, "/health/readiness")
                readiness = orjson.loads(body)
                _, metrics = await http_get(host.port, "/metrics")
                await server.start()  # same port: the host finds it again by itself
                with trio.fail_after(10):
                    while not shared.up:
                        await trio.sleep(0.05)
                # Both sessions (one from before, one from the outage) are in Redis again.
                assert await key_sessions_everywhere(host.port) == 2
                refused, hold_refused = await statuses_across(clients, [host.port], 2)
                assert refused == {429: 2}
                hold_one.set()
                hold_outage.set()
                hold_refused.set()
    assert status == 200  # outage mode "local": still serving
    assert readiness["shared_state"]["up"] is False
    assert readiness["shared_state"]["error"]
    assert value(parse_metrics(metrics), "rtgate_shared_state_up", store="redis") == 0


@needs_redis
async def test_fail_closed_refuses_during_an_outage(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(upstream.serve)
    async with redis_server(tmp_path) as server:
        router = redis_router(server) + "\n  shared_state_outage: closed"
        with trio.fail_after(30):
            async with open_gateway(host_config(upstream, 0, router=router)) as host:
                ok, _, _ = await raw_handshake(host.http_url + PATH, TEAM)
                await server.stop()
                refused, _, body = await raw_handshake(host.http_url + PATH, TEAM)
                ready, _ = await http_get(host.port, "/health/readiness")
    assert ok == 101
    assert refused == 503
    assert b"shared_state_outage" in body
    assert ready == 503
