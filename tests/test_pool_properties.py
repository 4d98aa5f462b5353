"""Property tests of the pool: exact round-robin shares, bookkeeping that never drifts."""

from __future__ import annotations

import collections
import itertools
import math
from fractions import Fraction

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from rtgate.config.model import Deployment, GatewayConfig, RouterSettings
from rtgate.pool.router import Pool, Selection
from rtgate.pool.strategy import integer_weights, smooth_wrr_pick

weight_lists = st.lists(st.integers(0, 12), min_size=1, max_size=6).filter(any)


@given(weight_lists)
def test_smooth_wrr_gives_exact_shares_over_a_cycle(weights: list[int]) -> None:
    current = [0] * len(weights)
    picks = collections.Counter(smooth_wrr_pick(weights, current) for _ in range(sum(weights)))
    assert all(picks[i] == w for i, w in enumerate(weights))
    assert current == [0] * len(weights)  # the cycle closes: the next one repeats it


@given(weight_lists, st.integers(1, 3))
def test_pool_round_robin_is_exact_over_whole_cycles(weights: list[int], cycles: int) -> None:
    deps = tuple(
        Deployment(model_name="g", provider="mock", model="m", id=f"d{i}", weight=float(w))
        for i, w in enumerate(weights)
    )
    pool = Pool(GatewayConfig(deployments=deps))
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(sum(weights) * cycles):
        sel = pool.select("g", 0.0)
        d = sel.next(0.0)
        assert d is not None
        sel.succeeded(d, 0.0, 0.01)
        pool.session_ended(d, 0.0, abnormal=False, duration=10.0)
        counts[d.id] += 1
    assert counts == {f"d{i}": w * cycles for i, w in enumerate(weights) if w}


decimal_weights = st.lists(
    st.builds(lambda n, d: n / d, st.integers(0, 1000), st.sampled_from([1, 2, 4, 10, 100])),
    min_size=1,
    max_size=6,
)


@given(decimal_weights)
def test_integer_weights_keep_proportions_exactly(weights: list[float]) -> None:
    ints = integer_weights(weights)
    exact = [Fraction(str(w)) for w in weights]
    assert all(i >= 0 for i in ints)
    for i, j in itertools.combinations(range(len(weights)), 2):
        assert ints[i] * exact[j] == ints[j] * exact[i]
    assert math.gcd(*ints) in (0, 1)  # smallest integers with those ratios


_OPS = ("select", "next", "fail", "succeed", "release", "end", "tick", "probe", "report", "reload")
_KINDS = ("refused", "timeout", "auth", "throttled", "rejected")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(0, 1)), min_size=1,
             max_size=4),
    st.sampled_from([0.0, 34.0, 50.0, 100.0]),
    st.data(),
)  # fmt: skip
def test_bookkeeping_never_drifts(
    shapes: list[tuple[int, int, int]], max_ejection: float, data: st.DataObject
) -> None:
    deps = tuple(
        Deployment(
            model_name="g", provider="mock", model="m", id=f"d{i}", weight=float(weight),
            max_parallel_requests=cap, rpm=5 if limited else None,
        )
        for i, (weight, cap, limited) in enumerate(shapes)
    )  # fmt: skip
    router = RouterSettings(
        allowed_fails=2, cooldown_time=3, cooldown_max=20, max_ejection_percent=max_ejection,
        early_failure_seconds=2, health_check_interval=15,
    )  # fmt: skip
    pool = Pool(GatewayConfig(deployments=deps, router=router))
    by_id = {d.id: d for d in deps}
    now = 0.0
    selections: list[Selection] = []
    reserved: list[tuple[Selection, Deployment]] = []
    live: list[tuple[Deployment, float]] = []
    probing: list[Deployment] = []

    for _ in range(data.draw(st.integers(1, 60))):
        op = data.draw(st.sampled_from(_OPS))
        if op == "select":
            selections.append(pool.select("g", now))
        elif op == "next" and selections:
            sel = data.draw(st.sampled_from(selections))
            d = sel.next(now)
            if d is not None:
                reserved.append((sel, d))
        elif op in ("fail", "succeed", "release") and reserved:
            sel, d = reserved.pop(data.draw(st.integers(0, len(reserved) - 1)))
            if op == "fail":
                kind = data.draw(st.sampled_from(_KINDS))
                sel.failed(d, now, kind, data.draw(st.none() | st.floats(0, 30)))
            elif op == "succeed":
                sel.succeeded(d, now, 0.1)
                live.append((d, now))
            else:
                sel.release(d, now)
        elif op == "end" and live:
            d, started = live.pop(data.draw(st.integers(0, len(live) - 1)))
            pool.session_ended(d, now, abnormal=data.draw(st.booleans()), duration=now - started)
        elif op == "tick":
            now += data.draw(st.sampled_from([0.5, 1.0, 3.0, 10.0, 61.0]))
        elif op == "probe":
            probing.extend(pool.claim_health_checks(now))
        elif op == "reload":
            # Same deployments with other weights and caps: load and health carry over.
            reweighted = tuple(
                attrs.evolve(d, weight=float(data.draw(st.integers(0, 3))),
                             max_parallel_requests=data.draw(st.none() | st.integers(1, 3)))
                for d in deps
            )  # fmt: skip
            pool.reconfigure(GatewayConfig(deployments=reweighted, router=router), now)
        elif op == "report" and probing:
            d = probing.pop(0)
            pool.report_probe(d, now, ok=data.draw(st.booleans()), kind="refused")

        held = collections.Counter(d.id for _, d in reserved) + collections.Counter(
            d.id for d, _ in live
        )
        stats = pool.statistics(now)
        not_closed = 0
        for dep_id in by_id:
            s = stats[dep_id]
            assert s["active_sessions"] == held[dep_id] >= 0
            cooldown = s["cooldown_remaining"]
            assert isinstance(cooldown, float) and cooldown >= 0
            not_closed += s["state"] in ("ejected", "half-open")
        assert not_closed <= math.floor(len(deps) * max_ejection / 100 + 1e-9)
        ready = pool.readiness(now)["g"]
        probe_sel = pool.select("g", now)
        offered = probe_sel.next(now)
        assert (offered is not None) == ready
        if offered is not None:
            probe_sel.release(offered, now)
