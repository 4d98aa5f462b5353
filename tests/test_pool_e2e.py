"""The pool end to end: clients -> rtgate -> three fake upstreams, two of them broken.

One deployment refuses TCP connections, one answers HTTP 500 at the upgrade,
one is healthy but slow (a proxy delays its bytes). Every client session must
succeed, and once the broken ones are cooling down they must get no dial.
"""

from __future__ import annotations

from functools import partial

import trio

from rtgate.testing.fake_upstream import FakeBehaviour, FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, gateway_yaml, openai_deployment
from tests.test_ops_support import free_port
from tests.wsclient import connect, recv_json

SESSIONS = 200
CONCURRENCY = 20
SLOW_SECONDS = 0.05


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        async for chunk in src:
            await dst.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


async def serve_slow_proxy(
    target_port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Forward TCP to ``target_port`` after holding each new connection ``SLOW_SECONDS``."""

    async def handle(client: trio.SocketStream) -> None:
        async with client:
            await trio.sleep(SLOW_SECONDS)
            upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def one_session(url: str) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with connect(url + "/v1/realtime?model=gpt-realtime", headers) as ws:
        event = await recv_json(ws)
        assert event["type"] == "session.created"


async def test_sessions_survive_broken_deployments_and_cooldowns_hold(
    nursery: trio.Nursery,
) -> None:
    failing = FakeRealtimeServer(api_key=UPSTREAM_KEY, behaviour=FakeBehaviour(reject_status=500))
    healthy = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(failing.serve)
    healthy_port = await nursery.start(healthy.serve)
    slow_port = await nursery.start(partial(serve_slow_proxy, healthy_port))
    refused_base = f"ws://127.0.0.1:{free_port()}/v1"
    config = gateway_yaml(
        openai_deployment("gpt-realtime", refused_base),
        openai_deployment("gpt-realtime", failing.base_url),
        openai_deployment("gpt-realtime", f"ws://127.0.0.1:{slow_port}/v1"),
        extra="router_settings:\n  allowed_fails: 2\n  cooldown_time: 300\n"
        "  max_ejection_percent: 100\n",
    )
    with trio.fail_after(60):
        async with open_gateway(config) as gw:
            pool = gw.gateway.pool
            ids = {d.api_base: d.id for d in pool.groups()["gpt-realtime"]}
            refused_id, failing_id = ids[refused_base], ids[failing.base_url]

            # One at a time until both broken deployments are cooling down.
            done = 0
            while done < 10:
                await one_session(gw.ws_url)
                done += 1
                states = pool.statistics(trio.current_time())
                if all(states[i]["state"] == "ejected" for i in (refused_id, failing_id)):
                    break
            assert failing.dials == 2  # allowed_fails, then never again
            assert states[refused_id]["last_error"] == "refused"
            assert states[failing_id]["last_error"] == "rejected"

            # The rest concurrently: every session succeeds, all on the slow one.
            limiter = trio.CapacityLimiter(CONCURRENCY)

            async def limited() -> None:
                async with limiter:
                    await one_session(gw.ws_url)

            async with trio.open_nursery() as clients:
                for _ in range(SESSIONS - done):
                    clients.start_soon(limited)

            assert failing.dials == 2
            assert healthy.sessions == SESSIONS
            final = pool.statistics(trio.current_time())
            assert final[failing_id]["ejections"] == 1
            assert final[refused_id]["ejections"] == 1
            assert pool.readiness(trio.current_time()) == {"gpt-realtime": True}
