"""Active health checks on a virtual clock, against fake connect functions that count dials."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import attrs
import pytest
import trio
import trio.testing

from rtgate.config.model import Deployment, GatewayConfig, RouterSettings, Secret
from rtgate.errors import UpstreamConnectError, UpstreamRejected
from rtgate.pool.router import Pool
from rtgate.providers.base import UpstreamLink
from rtgate.session.health_checks import provider_connect, run_health_checks
from rtgate.testing.fake_upstream import FakeBehaviour, FakeRealtimeServer
from rtgate.wire import Frame
from tests.conftest import UPSTREAM_KEY


@attrs.define
class FakeLink:
    """An upstream session that is open until closed."""

    first_frames: Sequence[Frame] = ()
    closed_with: tuple[int, str] | None = None

    async def receive(self) -> list[Frame]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, frames: Sequence[Frame]) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = (code, reason)

    def pending_bytes(self) -> int:
        return 0


@attrs.define
class FakeUpstreams:
    """Per deployment id, how a dial goes: ok, refuse, 401, 429, 500, hang, crash."""

    behaviour: dict[str, str]
    latency: float = 0.1
    dials: list[tuple[str, float]] = attrs.field(factory=list)
    links: list[FakeLink] = attrs.field(factory=list)

    def dial_times(self, dep_id: str) -> list[float]:
        return [round(t, 3) for d, t in self.dials if d == dep_id]

    async def connect(self, dep: Deployment) -> UpstreamLink:
        self.dials.append((dep.id, trio.current_time()))
        await trio.sleep(self.latency)
        mode = self.behaviour[dep.id]
        if mode == "refuse":
            raise UpstreamConnectError("connection refused", kind="refused")
        if mode in ("401", "429", "500"):
            raise UpstreamRejected(int(mode), retry_after=20.0 if mode == "429" else None)
        if mode == "hang":
            await trio.sleep_forever()
        if mode == "crash":
            raise RuntimeError("provider bug")
        link = FakeLink()
        self.links.append(link)
        return link


def dep(name: str, **kwargs: object) -> Deployment:
    return Deployment(model_name="rt", provider="mock", model="m", id=name, **kwargs)  # type: ignore[arg-type]


def make_pool(*deps: Deployment, **router: object) -> Pool:
    settings = RouterSettings(**{"max_ejection_percent": 100, **router})  # type: ignore[arg-type]
    return Pool(GatewayConfig(deployments=deps, router=settings))


def state(pool: Pool, dep_id: str) -> dict[str, object]:
    return pool.statistics(trio.current_time())[dep_id]


async def run_for(
    seconds: float, pool: Pool, fakes: FakeUpstreams, timeout: float | None = None
) -> None:
    with trio.move_on_after(seconds):
        await run_health_checks(pool, connect=fakes.connect, timeout=timeout)


async def test_idle_deployments_are_probed_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = make_pool(dep("a"), dep("b", health_check_interval=50), health_check_interval=30)
    fakes = FakeUpstreams({"a": "ok", "b": "ok"})
    with trio.fail_after(1000):
        await run_for(100, pool, fakes)
    # Due when idle for the interval since the last probe finished (dial + 0.1 s).
    assert fakes.dial_times("a") == [0.0, 30.1, 60.2, 90.3]
    assert fakes.dial_times("b") == [0.0, 50.1]
    assert all(link.closed_with == (1000, "health check") for link in fakes.links)
    assert state(pool, "a")["handshake_latency_ewma"] == pytest.approx(0.1)


async def test_no_interval_means_no_probes(autojump_clock: trio.testing.MockClock) -> None:
    pool = make_pool(dep("a"))
    fakes = FakeUpstreams({"a": "ok"})
    with trio.fail_after(1000):
        await run_for(100, pool, fakes)
    assert fakes.dials == []


async def test_cooling_deployment_gets_no_dial_until_its_cooldown_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = make_pool(dep("a"), allowed_fails=1, cooldown_time=5, cooldown_max=60,
                     health_check_interval=1000)  # fmt: skip
    fakes = FakeUpstreams({"a": "refuse"})
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_health_checks, pool, connect=fakes.connect))
            # Probe at 0 fails at 0.1: 5 s; trial probe at 5.1 fails at 5.2: 10 s; ...
            await trio.sleep(16)
            assert fakes.dial_times("a") == [0.0, 5.1, 15.2]
            assert state(pool, "a")["state"] == "ejected"
            fakes.behaviour["a"] = "ok"
            await trio.sleep(40)
            nursery.cancel_scope.cancel()
    # Third trial failed at 15.3 for 20 s: the next probe, at 35.3, passes and restores.
    assert fakes.dial_times("a") == [0.0, 5.1, 15.2, 35.3]
    assert state(pool, "a")["state"] == "closed"
    assert state(pool, "a")["ejections"] == 3


async def test_probe_failure_kinds_reach_the_pool(autojump_clock: trio.testing.MockClock) -> None:
    pool = make_pool(
        dep("auth"), dep("slow"), dep("busy"), dep("bug"), dep("bad"),
        allowed_fails=1, health_check_interval=1000, auth_cooldown_time=300,
    )  # fmt: skip
    fakes = FakeUpstreams(
        {"auth": "401", "slow": "hang", "busy": "429", "bug": "crash", "bad": "500"}
    )
    with trio.fail_after(1000):
        await run_for(3, pool, fakes, timeout=2)
    expected = {
        "auth": ("auth", 300.0),
        "slow": ("timeout", 5.0),
        "busy": ("throttled", 20.0),
        "bug": ("error", 5.0),
        "bad": ("rejected", 5.0),
    }
    for dep_id, (kind, cooldown) in expected.items():
        s = state(pool, dep_id)
        assert (s["state"], s["last_error"]) == ("ejected", kind), dep_id
        # Ejected when the probe ended (0.1 s, or 2 s for the timeout), read at 3 s.
        ended = 2.0 if dep_id == "slow" else 0.1
        assert s["cooldown_remaining"] == pytest.approx(cooldown - (3 - ended)), dep_id


async def test_a_probe_holds_the_half_open_trial(autojump_clock: trio.testing.MockClock) -> None:
    pool = make_pool(dep("a"), allowed_fails=1, cooldown_time=5, health_check_interval=1000)
    fakes = FakeUpstreams({"a": "refuse"}, latency=3.0)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_health_checks, pool, connect=fakes.connect))
            await trio.sleep(9)  # first probe failed at 3: cooldown until 8, trial probe dialing
            assert fakes.dial_times("a") == [0.0, 8.0]
            assert pool.readiness(trio.current_time()) == {"rt": False}
            sel = pool.select("rt", trio.current_time())
            assert sel.next(trio.current_time()) is None
            nursery.cancel_scope.cancel()


async def test_cancelled_probe_frees_its_claim(autojump_clock: trio.testing.MockClock) -> None:
    pool = make_pool(dep("a"), health_check_interval=10)
    fakes = FakeUpstreams({"a": "hang"})
    with trio.fail_after(1000):
        await run_for(1, pool, fakes, timeout=5)
    assert fakes.dial_times("a") == [0.0]
    assert state(pool, "a")["last_error"] is None  # not judged
    assert pool.next_health_check_at(trio.current_time()) == 10.0
    assert [d.id for d in pool.claim_health_checks(10.0)] == ["a"]


async def test_provider_connect_probes_real_sockets(nursery: trio.Nursery) -> None:
    healthy = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    failing = FakeRealtimeServer(api_key=UPSTREAM_KEY, behaviour=FakeBehaviour(reject_status=500))
    await nursery.start(healthy.serve)
    await nursery.start(failing.serve)
    deps = [
        Deployment(model_name="rt", provider="openai", model="gpt-realtime", id=name,
                   api_key=Secret(UPSTREAM_KEY), api_base=server.base_url)
        for name, server in (("good", healthy), ("bad", failing))
    ]  # fmt: skip
    pool = make_pool(*deps, allowed_fails=1, health_check_interval=100)
    with trio.fail_after(10):
        async with trio.open_nursery() as checks:
            await checks.start(partial(run_health_checks, pool, connect=provider_connect(pool)))
            while state(pool, "bad")["state"] != "ejected" or healthy.sessions == 0:
                await trio.sleep(0.01)
            checks.cancel_scope.cancel()
    good = state(pool, "good")
    assert (good["state"], good["last_error"]) == ("closed", None)
    assert good["handshake_latency_ewma"] is not None
    assert state(pool, "bad")["last_error"] == "rejected"
    assert (healthy.dials, failing.dials) == (1, 1)
