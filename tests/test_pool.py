"""The deployment pool: routing order, capacity, failover, cooldowns, reloads, visibility."""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Mapping

import attrs
import pytest

from rtgate.config.model import Deployment, GatewayConfig, RouterSettings, Secret
from rtgate.errors import AllDeploymentsBusy, NoDeploymentAvailable, UnknownModel
from rtgate.pool.router import Pool, Selection
from rtgate.pool.strategy import integer_weights, smooth_wrr_pick


def dep(name: str, group: str = "rt", **kwargs: object) -> Deployment:
    return Deployment(model_name=group, provider="openai", model=f"m-{name}", id=name, **kwargs)  # type: ignore[arg-type]


def make_pool(*deps: Deployment, rng: random.Random | None = None, **router: object) -> Pool:
    settings = RouterSettings(**router)  # type: ignore[arg-type]
    return Pool(GatewayConfig(deployments=deps, router=settings), rng=rng)


def connect(pool: Pool, group: str = "rt", now: float = 0.0) -> str:
    """One handshake where the first deployment offered connects; returns its id."""
    sel = pool.select(group, now)
    chosen = sel.next(now)
    assert chosen is not None
    sel.succeeded(chosen, now, 0.1)
    return chosen.id


def fail_once(pool: Pool, group: str = "rt", now: float = 0.0, kind: str = "refused",
              retry_after: float | None = None) -> str:  # fmt: skip
    """One handshake whose first offered deployment fails; the selection is then dropped."""
    sel = pool.select(group, now)
    chosen = sel.next(now)
    assert chosen is not None
    sel.failed(chosen, now, kind, retry_after)
    return chosen.id


def walk(sel: Selection, now: float, fail: set[str]) -> tuple[list[str], str | None]:
    """Dial everything offered; ids in ``fail`` fail. Returns (offered, connected)."""
    offered: list[str] = []
    while (d := sel.next(now)) is not None:
        offered.append(d.id)
        if d.id in fail:
            sel.failed(d, now, "refused")
            continue
        sel.succeeded(d, now, 0.05)
        return offered, d.id
    return offered, None


def stats(pool: Pool, dep_id: str, now: float = 0.0) -> Mapping[str, object]:
    return pool.statistics(now)[dep_id]


# -- weighted round-robin -------------------------------------------------------------


def test_smooth_wrr_matches_nginx_sequence() -> None:
    # nginx's documented example: weights 5, 1, 1 give a a b a c a a.
    current = [0, 0, 0]
    picks = "".join("abc"[smooth_wrr_pick([5, 1, 1], current)] for _ in range(7))
    assert picks == "aabacaa"
    assert current == [0, 0, 0]


def test_integer_weights_keep_ratios() -> None:
    assert integer_weights([3, 1]) == [3, 1]
    assert integer_weights([0.5, 0.25]) == [2, 1]
    assert integer_weights([0.1, 0.3, 0]) == [1, 3, 0]
    assert integer_weights([2, 4]) == [1, 2]
    assert integer_weights([0, 0]) == [0, 0]


def test_weights_3_to_1_give_exactly_300_and_100_interleaved() -> None:
    pool = make_pool(dep("a", weight=3), dep("b", weight=1))
    picks = []
    for i in range(400):
        picks.append(connect(pool, now=float(i)))
        pool.session_ended(pool.groups()["rt"][0 if picks[-1] == "a" else 1], float(i),
                           abnormal=False, duration=1.0)  # fmt: skip
    assert collections.Counter(picks) == {"a": 300, "b": 100}
    assert picks[:8] == ["a", "a", "b", "a"] * 2
    # Interleaved: b never waits more than 3 picks.
    assert "aaaa" not in "".join(picks)


def test_unavailable_deployment_is_left_out_of_the_round() -> None:
    pool = make_pool(dep("a", max_parallel_requests=1), dep("b"), dep("c"))
    assert connect(pool) == "a"  # a now full
    picks = [connect(pool) for _ in range(4)]
    assert picks == ["b", "c", "b", "c"]


def test_weight_zero_is_standby_until_every_weighted_one_is_unavailable() -> None:
    pool = make_pool(
        dep("a", max_parallel_requests=1), dep("b", max_parallel_requests=1), dep("s", weight=0)
    )
    assert stats(pool, "s")["state"] == "standby"
    assert {connect(pool), connect(pool)} == {"a", "b"}
    assert connect(pool) == "s"


def test_standby_is_dialed_last_in_failover() -> None:
    pool = make_pool(dep("s", weight=0), dep("a"), dep("b"))
    offered, connected = walk(pool.select("rt", 0), 0, fail={"a", "b"})
    assert offered == ["a", "b", "s"]
    assert connected == "s"


def test_least_busy_prefers_fewest_sessions_then_weight() -> None:
    pool = make_pool(dep("a", weight=1), dep("b", weight=2), routing_strategy="least-busy")
    assert connect(pool) == "b"  # tie on sessions: heavier wins
    assert connect(pool) == "a"
    assert connect(pool) == "b"
    pool.session_ended(pool.groups()["rt"][0], 1.0, abnormal=False, duration=1.0)
    assert connect(pool) == "a"


def test_simple_shuffle_follows_weights_with_an_injected_random() -> None:
    pool = make_pool(
        dep("a", weight=3), dep("b", weight=1), dep("s", weight=0),
        routing_strategy="simple-shuffle", rng=random.Random(7),
    )  # fmt: skip
    picks = collections.Counter(connect(pool) for _ in range(4000))
    assert picks["s"] == 0
    assert 2800 < picks["a"] < 3200
    # The same seed gives the same sequence.
    again = make_pool(
        dep("a", weight=3), dep("b", weight=1), routing_strategy="simple-shuffle",
        rng=random.Random(7),
    )  # fmt: skip
    first = make_pool(
        dep("a", weight=3), dep("b", weight=1), routing_strategy="simple-shuffle",
        rng=random.Random(7),
    )  # fmt: skip
    assert [connect(again) for _ in range(50)] == [connect(first) for _ in range(50)]


def test_unknown_group() -> None:
    with pytest.raises(UnknownModel):
        make_pool(dep("a")).select("nope", 0)


# -- capacity -------------------------------------------------------------------------


def test_max_parallel_requests_and_busy_error() -> None:
    pool = make_pool(dep("a", max_parallel_requests=2), dep("b", max_parallel_requests=1))
    for _ in range(3):
        connect(pool)
    sel = pool.select("rt", 0)
    assert sel.next(0) is None
    err = sel.exhausted()
    assert isinstance(err, AllDeploymentsBusy)
    assert err.retry_after == 1.0
    assert pool.readiness(0) == {"rt": False}
    a = pool.groups()["rt"][0]
    pool.session_ended(a, 5, abnormal=False, duration=5)
    assert pool.readiness(5) == {"rt": True}
    assert connect(pool, now=5) == "a"


def test_rpm_is_a_sliding_window() -> None:
    pool = make_pool(dep("a", rpm=2))
    assert connect(pool, now=0) == "a"
    assert connect(pool, now=10) == "a"
    sel = pool.select("rt", 30)
    assert sel.next(30) is None
    err = sel.exhausted()
    assert isinstance(err, AllDeploymentsBusy)
    assert err.retry_after == pytest.approx(30.0)  # the start at t=0 leaves the window at 60
    assert pool.readiness(59.9) == {"rt": False}
    assert connect(pool, now=60.5) == "a"
    assert stats(pool, "a", 60.5)["sessions_last_minute"] == 2


def test_failed_dials_release_their_slot() -> None:
    pool = make_pool(dep("a", max_parallel_requests=1), allowed_fails=100)
    for i in range(5):
        fail_once(pool, now=float(i))
    assert stats(pool, "a")["active_sessions"] == 0


def test_release_frees_a_cancelled_dial_without_judging_it() -> None:
    pool = make_pool(dep("a", max_parallel_requests=1), allowed_fails=1)
    sel = pool.select("rt", 0)
    a = sel.next(0)
    assert a is not None
    sel.release(a, 0)
    s = stats(pool, "a")
    assert (s["active_sessions"], s["consecutive_failures"], s["state"]) == (0, 0, "closed")


# -- failover and fallbacks -------------------------------------------------------------


def test_failover_tries_each_deployment_once_then_exhausts() -> None:
    pool = make_pool(dep("a"), dep("b"), dep("c"), allowed_fails=10)
    sel = pool.select("rt", 0)
    offered, connected = walk(sel, 0, fail={"a", "b", "c"})
    assert offered == ["a", "b", "c"]
    assert connected is None
    err = sel.exhausted()
    assert type(err) is NoDeploymentAvailable
    assert "3 tried" in str(err)


def test_failover_continues_after_the_pick_in_file_order() -> None:
    pool = make_pool(dep("a"), dep("b"), dep("c"), allowed_fails=10)
    connect(pool)  # a; the next pick is b
    offered, connected = walk(pool.select("rt", 0), 0, fail={"b"})
    assert (offered, connected) == (["b", "c"], "c")


def test_num_retries_limits_attempts() -> None:
    pool = make_pool(dep("a"), dep("b"), dep("c"), num_retries=1, allowed_fails=10)
    offered, _ = walk(pool.select("rt", 0), 0, fail={"a", "b", "c"})
    assert offered == ["a", "b"]
    pool0 = make_pool(dep("a"), dep("b"), num_retries=0, allowed_fails=10)
    assert walk(pool0.select("rt", 0), 0, fail={"a", "b"})[0] == ["a"]


def test_fallback_groups_come_after_the_group() -> None:
    pool = make_pool(
        dep("a"), dep("b"), dep("x", group="backup"), dep("y", group="backup"), dep("z", group="other"),
        fallbacks={"rt": ("missing", "rt", "backup")}, allowed_fails=10,
    )  # fmt: skip
    offered, connected = walk(pool.select("rt", 0), 0, fail={"a", "b", "x"})
    assert (offered, connected) == (["a", "b", "x", "y"], "y")
    # Fallbacks are not chained back: backup has none of its own.
    offered, connected = walk(pool.select("backup", 0), 0, fail={"x", "y"})
    assert (offered, connected) == (["y", "x"], None)  # backup's round-robin moved on


def test_busy_group_falls_back_too() -> None:
    pool = make_pool(dep("a", max_parallel_requests=1), dep("x", group="backup"),
                     fallbacks={"rt": ("backup",)})  # fmt: skip
    assert connect(pool) == "a"
    assert connect(pool) == "x"


# -- health: cooldowns -------------------------------------------------------------------


def test_consecutive_failures_eject_and_cooldown_grows_to_the_max() -> None:
    pool = make_pool(
        dep("a"), dep("b"), allowed_fails=3, cooldown_time=5, cooldown_max=18,
        max_ejection_percent=100,
    )  # fmt: skip
    # Round-robin alternates a, b: six handshakes give b three failures in a row
    # (a's successes in between do not reset b's streak).
    t = 0.0
    offered_b = 0
    for _ in range(6):
        offered, connected = walk(pool.select("rt", t), t, fail={"b"})
        offered_b += "b" in offered
        assert connected == "a"
    assert offered_b == 3
    s = stats(pool, "b", t)
    assert (s["state"], s["ejections"], s["cooldown_remaining"]) == ("ejected", 1, 5.0)
    assert pool.ejection_counts() == {"a": 0, "b": 1}
    # During the cooldown b is never offered, even when a fails.
    for i in range(10):
        offered, _ = walk(pool.select("rt", 4.9), 4.9, fail={"a"})
        assert "b" not in offered, i
    # Cooldown over: half-open; its trial fails: 10 s, then 18 (capped), then 18.
    expected = [10.0, 18.0, 18.0]
    t = 5.0
    for cooldown in expected:
        assert stats(pool, "b", t)["state"] == "half-open"
        sel = pool.select("rt", t)
        offered, connected = walk(sel, t, fail={"b", "a"})
        assert "b" in offered
        assert stats(pool, "b", t)["cooldown_remaining"] == cooldown
        t += cooldown
    # A trial that connects restores it.
    assert stats(pool, "b", t)["state"] == "half-open"
    offered, connected = walk(pool.select("rt", t), t, fail={"a"})
    assert connected == "b"
    assert stats(pool, "b", t)["state"] == "closed"


def test_dials_in_flight_at_ejection_do_not_stretch_the_cooldown() -> None:
    pool = make_pool(dep("a"), allowed_fails=2, cooldown_time=5, max_ejection_percent=100)
    in_flight = []
    for _ in range(6):  # six concurrent handshakes all dialing a
        sel = pool.select("rt", 0)
        d = sel.next(0)
        assert d is not None
        in_flight.append((sel, d))
    for sel, d in in_flight:
        sel.failed(d, 1, "refused")
    s = stats(pool, "a", 1)
    assert (s["ejections"], s["cooldown_remaining"], s["consecutive_failures"]) == (1, 5.0, 6)
    fail_once(pool, now=6)  # the trial fails: the second ejection is the first growth
    assert stats(pool, "a", 6)["cooldown_remaining"] == 10.0


def test_suppressed_ejections_do_not_grow_the_cooldown() -> None:
    pool = make_pool(dep("a"), dep("b"), allowed_fails=1, cooldown_time=5, max_ejection_percent=50)
    walk(pool.select("rt", 0), 0, fail={"a", "b"})  # a ejected; b's ejection suppressed
    for t in range(1, 5):
        assert walk(pool.select("rt", t), t, fail={"b"})[0] == ["b"]  # suppressed again
    assert walk(pool.select("rt", 5), 5, fail={"b"})[1] == "a"  # a's trial restores it
    assert stats(pool, "b", 5)["state"] == "closed"
    for _ in range(2):  # b's turn comes within two handshakes
        walk(pool.select("rt", 6), 6, fail={"b"})
    s = stats(pool, "b", 6)
    # Five suppressed ejections left no mark: b's first real one is the base cooldown.
    assert (s["state"], s["ejections"], s["cooldown_remaining"]) == ("ejected", 1, 5.0)


def test_success_resets_the_consecutive_count() -> None:
    pool = make_pool(dep("a"), allowed_fails=3, max_ejection_percent=100)
    fail_once(pool)
    fail_once(pool)
    connect(pool)
    fail_once(pool)
    fail_once(pool)
    assert stats(pool, "a")["state"] == "closed"
    fail_once(pool)
    assert stats(pool, "a")["state"] == "ejected"


def test_half_open_allows_one_trial_at_a_time() -> None:
    pool = make_pool(dep("a"), allowed_fails=1, cooldown_time=5, max_ejection_percent=100)
    fail_once(pool, now=0)
    trial = pool.select("rt", 6)
    assert trial.next(6) is not None
    assert pool.readiness(6) == {"rt": False}
    other = pool.select("rt", 6)
    assert other.next(6) is None
    err = other.exhausted()
    assert type(err) is NoDeploymentAvailable
    assert err.retry_after == 1.0
    # Abandoning the trial (client left) frees it for the next handshake.
    a = pool.groups()["rt"][0]
    trial.release(a, 6)
    assert pool.readiness(6) == {"rt": True}


def test_cooldown_error_says_when_to_retry() -> None:
    pool = make_pool(dep("a"), allowed_fails=1, cooldown_time=5, max_ejection_percent=100)
    fail_once(pool, now=0)
    sel = pool.select("rt", 2)
    assert sel.next(2) is None
    err = sel.exhausted()
    assert type(err) is NoDeploymentAvailable
    assert err.retry_after == pytest.approx(3.0)


def test_ejection_level_is_forgiven_after_a_long_healthy_spell() -> None:
    pool = make_pool(dep("a"), allowed_fails=1, cooldown_time=5, cooldown_max=60,
                     max_ejection_percent=100)  # fmt: skip
    fail_once(pool, now=0)  # 5 s
    fail_once(pool, now=5)  # trial fails: 10 s
    connect(pool, now=15)  # restored at 15
    fail_once(pool, now=100)  # 85 s healthy > cooldown_max: back to 5 s
    assert stats(pool, "a", 100)["cooldown_remaining"] == 5.0


def test_failure_on_probation_ejects_again_at_once() -> None:
    pool = make_pool(dep("a"), allowed_fails=3, cooldown_time=5, early_failure_seconds=5,
                     max_ejection_percent=100)  # fmt: skip
    for _ in range(3):
        fail_once(pool, now=0)
    connect(pool, now=5)  # trial connects: closed, on probation until 10
    fail_once(pool, now=7)
    s = stats(pool, "a", 7)
    assert (s["state"], s["cooldown_remaining"], s["ejections"]) == ("ejected", 10.0, 2)


def test_auth_failure_ejects_at_once_for_the_auth_cooldown() -> None:
    pool = make_pool(dep("a"), dep("b"), allowed_fails=3, auth_cooldown_time=60)
    fail_once(pool, kind="auth")
    s = stats(pool, "a")
    assert (s["state"], s["cooldown_remaining"], s["last_error"]) == ("ejected", 60.0, "auth")
    assert connect(pool, now=59) == "b"


def test_throttled_honours_retry_after() -> None:
    pool = make_pool(dep("a"), dep("b"), cooldown_time=5, cooldown_max=300)
    fail_once(pool, kind="throttled", retry_after=7)
    assert stats(pool, "a")["cooldown_remaining"] == 7.0
    pool2 = make_pool(dep("a"), dep("b"), cooldown_time=5)
    fail_once(pool2, kind="throttled")
    assert stats(pool2, "a")["cooldown_remaining"] == 5.0


def test_sessions_that_die_young_count_as_failures() -> None:
    pool = make_pool(dep("a"), dep("b"), allowed_fails=2, early_failure_seconds=5,
                     max_ejection_percent=50)  # fmt: skip
    a = pool.groups()["rt"][0]
    for t in (0.0, 2.0):
        sel = pool.select("rt", t)
        _, connected = walk(sel, t, fail=set())
        if connected == "a":
            pool.session_ended(a, t + 1, abnormal=True, duration=1.0)
        else:
            assert connected == "b"
            assert connect(pool, now=t) == "a"
            pool.session_ended(a, t + 1, abnormal=True, duration=1.0)
    # Each connect succeeded, yet two young abnormal ends in a row eject it.
    s = stats(pool, "a", 3)
    assert (s["state"], s["last_error"]) == ("ejected", "early_close")


def test_a_session_that_lives_resets_the_early_close_streak() -> None:
    pool = make_pool(dep("a"), allowed_fails=2, early_failure_seconds=5, max_ejection_percent=100)
    a = pool.groups()["rt"][0]
    connect(pool)
    pool.session_ended(a, 1, abnormal=True, duration=1)
    connect(pool, now=1)
    pool.session_ended(a, 60, abnormal=True, duration=59)  # lived: not a health signal
    connect(pool, now=60)
    pool.session_ended(a, 61, abnormal=True, duration=1)
    assert stats(pool, "a", 61)["state"] == "closed"
    assert stats(pool, "a", 61)["active_sessions"] == 0


def test_max_ejection_percent_keeps_deployments_in_rotation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rtgate.pool")
    pool = make_pool(dep("a"), dep("b"), allowed_fails=1, max_ejection_percent=50)
    walk(pool.select("rt", 0), 0, fail={"a", "b"})
    assert stats(pool, "a")["state"] == "ejected"
    assert stats(pool, "b")["state"] == "closed"
    assert stats(pool, "b")["ejection_suppressed"] is True
    # Panic: b keeps being offered although it keeps failing.
    for t in range(1, 4):
        offered, _ = walk(pool.select("rt", t), t, fail={"b"})
        assert offered == ["b"]
    assert pool.readiness(3) == {"rt": True}
    panic_logs = [r for r in caplog.records if "panic" in r.getMessage()]
    assert len(panic_logs) == 1
    ejection_logs = [r for r in caplog.records if "ejected for" in r.getMessage()]
    assert len(ejection_logs) == 1


def test_single_deployment_group_is_never_ejected_under_50_percent() -> None:
    pool = make_pool(dep("a"), allowed_fails=1, max_ejection_percent=50)
    for t in range(5):
        fail_once(pool, now=float(t))
    assert stats(pool, "a")["state"] == "closed"
    assert stats(pool, "a")["consecutive_failures"] == 5


def test_state_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rtgate.pool")
    pool = make_pool(dep("a"), allowed_fails=2, cooldown_time=5, max_ejection_percent=100)
    fail_once(pool, now=0)
    fail_once(pool, now=0)
    for t in (1.0, 2.0, 6.0, 6.5):
        pool.readiness(t)
        pool.statistics(t)
    connect(pool, now=7)
    for _ in range(20):
        connect(pool, now=8)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert "ejected for 5s: 2 consecutive connect failures (last: refused)" in messages[0]
    assert "half-open" in messages[1]
    assert "back in rotation" in messages[2]
    assert all(r.name == "rtgate.pool" for r in caplog.records)


# -- reload ------------------------------------------------------------------------------


def test_reconfigure_keeps_state_of_unchanged_deployments() -> None:
    a, b, c = dep("a", api_key=Secret("k1")), dep("b"), dep("c")
    pool = make_pool(a, b, c, allowed_fails=1, max_ejection_percent=100)
    connect(pool)  # a live
    offered, connected = walk(pool.select("rt", 0), 0, fail={"b", "c"})  # b, c ejected
    assert (offered, connected) == (["b", "c", "a"], "a")
    assert stats(pool, "a")["active_sessions"] == 2
    new = GatewayConfig(
        deployments=(attrs.evolve(a, weight=2.0), attrs.evolve(b, api_key=Secret("rotated")),
                     dep("d")),
        router=RouterSettings(allowed_fails=1, max_ejection_percent=100),
    )  # fmt: skip
    pool.reconfigure(new, 1.0)
    assert set(pool.statistics(1.0)) == {"a", "b", "d"}
    sa = stats(pool, "a", 1)
    assert (sa["active_sessions"], sa["weight"]) == (2, 2.0)  # weight change keeps state
    assert stats(pool, "b", 1)["state"] == "closed"  # new key: a fresh start
    assert stats(pool, "b", 1)["ejections"] == 1  # the counter stays monotonic
    # Sessions on removed deployments end without harm.
    pool.session_ended(c, 2, abnormal=True, duration=1)
    a2 = pool.groups()["rt"][0]
    pool.session_ended(a2, 2, abnormal=False, duration=2)
    assert stats(pool, "a", 2)["active_sessions"] == 1


def test_reconfigure_keeps_ejection_of_unchanged_deployment() -> None:
    pool = make_pool(dep("a"), dep("b"), allowed_fails=1, max_ejection_percent=100)
    fail_once(pool)
    pool.reconfigure(
        GatewayConfig(deployments=(dep("a"), dep("b"), dep("c")), router=RouterSettings()), 1.0
    )
    assert stats(pool, "a", 1)["state"] == "ejected"
    assert stats(pool, "a", 1)["cooldown_remaining"] == 4.0


def test_removed_deployment_with_live_session_still_counts_until_it_ends() -> None:
    pool = make_pool(dep("a"), dep("b"))
    connect(pool)
    a = pool.groups()["rt"][0]
    pool.reconfigure(GatewayConfig(deployments=(dep("b"),)), 1.0)
    pool.reconfigure(GatewayConfig(deployments=(dep("b"),)), 2.0)
    pool.session_ended(a, 3, abnormal=False, duration=3)
    assert pool._retired == {}


def test_deployment_removed_and_added_back_keeps_counting_its_sessions() -> None:
    pool = make_pool(dep("a"), dep("b"))
    connect(pool)
    a = pool.groups()["rt"][0]
    pool.reconfigure(GatewayConfig(deployments=(dep("b"),)), 1.0)
    pool.reconfigure(GatewayConfig(deployments=(dep("a"), dep("b"))), 2.0)
    assert stats(pool, "a", 2)["active_sessions"] == 1
    pool.session_ended(a, 3, abnormal=False, duration=3)
    assert stats(pool, "a", 3)["active_sessions"] == 0
    assert pool._retired == {}


def test_selection_started_before_a_reload_settles_cleanly() -> None:
    pool = make_pool(dep("a"), dep("b"))
    sel = pool.select("rt", 0)
    a = sel.next(0)
    assert a is not None
    pool.reconfigure(GatewayConfig(deployments=(dep("a"),)), 0.5)
    sel.succeeded(a, 1, 0.5)
    pool.session_ended(a, 2, abnormal=False, duration=1)
    assert stats(pool, "a", 2)["active_sessions"] == 0


# -- visibility ----------------------------------------------------------------------------


def test_statistics_content() -> None:
    pool = make_pool(dep("a", max_parallel_requests=4, rpm=10), dep("s", weight=0),
                     allowed_fails=5)  # fmt: skip
    sel = pool.select("rt", 0)
    a = sel.next(0)
    assert a is not None
    sel.succeeded(a, 0.4, 0.4)
    connect(pool, now=1)
    fail_once(pool, now=2, kind="timeout")
    assert pool.statistics(3) == {
        "a": {
            "model_name": "rt", "provider": "openai", "model": "m-a", "state": "closed",
            "weight": 1.0, "active_sessions": 2, "max_parallel_requests": 4, "rpm": 10,
            "sessions_last_minute": 3, "consecutive_failures": 1, "consecutive_early_closes": 0,
            "ejections": 0, "cooldown_remaining": 0.0, "ejection_suppressed": False,
            "last_error": "timeout", "last_error_seconds_ago": 1.0,
            "handshake_latency_ewma": pytest.approx(0.4 + 0.2 * (0.1 - 0.4)),
        },
        "s": {
            "model_name": "rt", "provider": "openai", "model": "m-s", "state": "standby",
            "weight": 0.0, "active_sessions": 0, "max_parallel_requests": None, "rpm": None,
            "sessions_last_minute": 0, "consecutive_failures": 0, "consecutive_early_closes": 0,
            "ejections": 0, "cooldown_remaining": 0.0, "ejection_suppressed": False,
            "last_error": None, "last_error_seconds_ago": None, "handshake_latency_ewma": None,
        },
    }  # fmt: skip


def test_readiness_per_group() -> None:
    pool = make_pool(dep("a"), dep("x", group="other"), allowed_fails=1, max_ejection_percent=100)
    fail_once(pool, group="other")
    assert pool.readiness(1) == {"rt": True, "other": False}
    assert pool.readiness(5) == {"rt": True, "other": True}  # half-open can take its trial


# -- active health checks (pure side) --------------------------------------------------------


def test_probes_skip_cooldown_and_start_the_moment_it_ends() -> None:
    pool = make_pool(dep("a"), dep("b"), allowed_fails=1, cooldown_time=5,
                     max_ejection_percent=100, health_check_interval=30)  # fmt: skip
    # At start every deployment is idle: both are probed once.
    assert [d.id for d in pool.claim_health_checks(0)] == ["a", "b"]
    assert pool.claim_health_checks(0) == []  # already in flight
    a, b = pool.groups()["rt"]
    pool.report_probe(a, 1, ok=True, handshake_seconds=0.2)
    pool.report_probe(b, 1, ok=False, kind="refused")
    assert stats(pool, "b", 1)["state"] == "ejected"
    assert pool.next_health_check_at(1) == 6.0
    assert [d.id for d in pool.claim_health_checks(5.9)] == []
    assert [d.id for d in pool.claim_health_checks(6)] == ["b"]
    # The probe holds the trial: no client session is offered b meanwhile.
    offered, _ = walk(pool.select("rt", 6), 6, fail=set())
    assert offered == ["a"]
    pool.session_ended(a, 6, abnormal=False, duration=0.5)
    pool.report_probe(b, 6.5, ok=True)
    assert stats(pool, "b", 6.5)["state"] == "closed"
    # Idle probing: a was last active at 1 (probe) and 6 (dial).
    assert pool.next_health_check_at(7) == 36.0


def test_failed_probe_on_half_open_ejects_longer() -> None:
    pool = make_pool(dep("a"), allowed_fails=1, cooldown_time=5, max_ejection_percent=100,
                     health_check_interval=30)  # fmt: skip
    fail_once(pool, now=0)
    (a,) = pool.claim_health_checks(5)
    pool.report_probe(a, 5.5, ok=False, kind="rejected")
    assert stats(pool, "a", 5.5)["cooldown_remaining"] == 10.0


def test_busy_deployments_are_not_probed_and_cancel_frees_the_claim() -> None:
    pool = make_pool(dep("a", health_check_interval=10), dep("b"))
    connect(pool)  # a has a live session
    assert pool.claim_health_checks(100) == []
    pool.session_ended(pool.groups()["rt"][0], 100, abnormal=False, duration=100)
    (a,) = pool.claim_health_checks(100)
    pool.cancel_probe(a)
    assert pool.next_health_check_at(100) == 110.0
