"""Warm pools without I/O: the config rules, the policy helpers, the pool's warm accounting."""

from __future__ import annotations

import importlib
import sys

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtgate.config.model import Deployment, GatewayConfig, RouterSettings, WarmPoolSettings
from rtgate.edge.configfile import parse_text
from rtgate.errors import ConfigError
from rtgate.pool.router import Pool
from rtgate.pool.state import Phase
from rtgate.pool.warm_policy import (
    MAX_IDLE_FRAMES,
    VERTEX_MAX_IDLE_SECONDS,
    RefillBackoff,
    dials_wanted,
    idle_frames_problem,
    is_young_death,
    recycle_at,
)
from rtgate.wire import Binary

WARM = WarmPoolSettings(size=2)


def _yaml(model: str, params: str) -> str:
    return f"""model_list:
  - model_name: g
    litellm_params:
      model: {model}
{params}
"""


def _load(model: str, params: str) -> Deployment:
    return parse_text(_yaml(model, params), path="c.yaml", env={}).config.deployments[0]


# -- configuration -------------------------------------------------------------------------


def test_warm_pool_keys_load_with_defaults_and_shorthand() -> None:
    dep = _load(
        "openai/gpt-realtime",
        "      api_key: k\n      warm_pool: {size: 3, max_idle_seconds: 60, refill_delay_seconds: 2,"
        " refill_delay_max_seconds: 30, ping_interval_seconds: 0}",
    )
    assert dep.warm_pool == WarmPoolSettings(
        size=3, max_idle_seconds=60.0, refill_delay_seconds=2.0,
        refill_delay_max_seconds=30.0, ping_interval_seconds=0.0,
    )  # fmt: skip
    assert "warm_pool" not in dep.params
    short = _load("gemini/m", "      api_key: k\n      warm_pool: 2")
    assert short.warm_pool == WarmPoolSettings(size=2)
    assert _load("openai/m", "      api_key: k").warm_pool is None


@pytest.mark.parametrize(
    ("model", "params", "line", "words"),
    [
        ("openai/m", "      api_key: k\n      warm_pool: {size: 0}", 6, "size must be an integer >= 1"),
        ("openai/m", "      api_key: k\n      warm_pool:\n        size: 1.5", 7, "must be an integer"),
        ("openai/m", "      api_key: k\n      warm_pool: {size: 1, max_idle_seconds: 0}", 6,
         "max_idle_seconds must be > 0"),
        ("openai/m", "      api_key: k\n      warm_pool: [2]", 6, "mapping or an integer"),
        ("openai/m", "      api_key: k\n      max_parallel_requests: 2\n      warm_pool: 3", 7,
         "larger than max_parallel_requests"),
        ("mock/m", "      warm_pool: 1", 5, "mock/ runs in-process"),
        ("bedrock/amazon.nova-sonic-v1:0", "      aws_region_name: us-east-1\n      warm_pool: 1",
         6, "signed for its own request"),
        ("vertex_ai/m", "      vertex_project: p\n      vertex_credentials: '{}'\n"
         "      warm_pool: {size: 1, max_idle_seconds: 600}", 7, "<= 240 for vertex_ai"),
        ("openai/m", "      api_key: k\n      warm_pool: {size: 1, refill_delay_seconds: 5,"
         " refill_delay_max_seconds: 1}", 6, "refill_delay_max_seconds must be >="),
    ],
)  # fmt: skip
def test_bad_warm_pool_settings_name_file_and_line(
    model: str, params: str, line: int, words: str
) -> None:
    if model.startswith("vertex_ai"):
        pytest.importorskip("cryptography")
        params = params.replace("'{}'", "os.environ/CREDS")
    with pytest.raises(ConfigError) as info:
        parse_text(_yaml(model, params), path="c.yaml", env={"CREDS": _service_account()})
    assert f"c.yaml:{line}:" in str(info.value)
    assert words in str(info.value)


def _service_account() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return orjson.dumps(
        {"type": "service_account", "client_email": "a@p.iam.gserviceaccount.com",
         "private_key": pem, "private_key_id": "k1", "project_id": "p",
         "token_uri": "http://127.0.0.1:1/token"}
    ).decode()  # fmt: skip


def test_vertex_bound_follows_the_token_refresh_margin() -> None:
    from rtgate.providers.google_auth import REFRESH_MARGIN

    # A token is used with at least REFRESH_MARGIN left; the warm age must stay inside it.
    assert VERTEX_MAX_IDLE_SECONDS < REFRESH_MARGIN
    assert WarmPoolSettings(size=1).max_idle_seconds <= VERTEX_MAX_IDLE_SECONDS


def test_policy_module_is_pure() -> None:
    for name in list(sys.modules):
        if name == "rtgate.pool.warm_policy":
            del sys.modules[name]
    before = set(sys.modules)
    importlib.import_module("rtgate.pool.warm_policy")
    loaded = set(sys.modules) - before
    assert not {m for m in loaded if m.split(".")[0] in ("trio", "hypercorn", "websockets")}


# -- policy helpers ------------------------------------------------------------------------


def test_refill_backoff_doubles_up_to_its_cap_and_resets() -> None:
    settings_ = WarmPoolSettings(size=1, refill_delay_seconds=1, refill_delay_max_seconds=5)
    backoff = RefillBackoff()
    assert backoff.ready(0.0)
    waits = []
    for _ in range(5):
        backoff.failed(100.0, settings_)
        waits.append(backoff.not_before - 100.0)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert not backoff.ready(104.9) and backoff.ready(105.0)
    backoff.succeeded()
    assert backoff.ready(0.0) and backoff.failures == 0


@given(st.floats(0, 1e6), st.floats(0, 30), st.floats(1, 3600, allow_nan=False))
def test_recycling_starts_before_expiry_and_after_three_quarters(
    dialed_at: float, dial_seconds: float, max_idle: float
) -> None:
    settings_ = WarmPoolSettings(size=1, max_idle_seconds=max_idle)
    at = recycle_at(dialed_at, dial_seconds, settings_)
    assert dialed_at + 0.75 * max_idle - 1e-6 <= at < dialed_at + max_idle


def test_dials_wanted_and_young_deaths() -> None:
    assert dials_wanted(3, 1, 1) == 1
    assert dials_wanted(2, 2, 1) == 0
    assert dials_wanted(2, 5, 0) == 0
    assert is_young_death(5.0, WARM) and not is_young_death(11.0, WARM)
    assert not is_young_death(3.0, WarmPoolSettings(size=1, max_idle_seconds=4))


def test_idle_frames_are_kept_unless_error_goaway_or_too_many() -> None:
    ping = b'{"type":"ping"}'
    assert idle_frames_problem([ping, b"not json"], 0) is None
    assert idle_frames_problem([b'{"type":"error","error":{}}'], 0) == "error_event"
    assert idle_frames_problem([b'{"goAway":{"timeLeft":"5s"}}'], 0) == "error_event"
    assert idle_frames_problem([Binary(b'{"goAway":{"timeLeft":"5s"}}')], 0) == "error_event"
    assert idle_frames_problem([ping], MAX_IDLE_FRAMES) == "overflow"


# -- the pool's warm accounting ------------------------------------------------------------


def _pool(cap: int | None = 2, rpm: int | None = None, **router: object) -> tuple[Pool, Deployment]:
    dep = Deployment(
        model_name="g", provider="openai", model="m", id="d", max_parallel_requests=cap,
        rpm=rpm, warm_pool=WarmPoolSettings(size=2),
    )  # fmt: skip
    return Pool(GatewayConfig(deployments=(dep,), router=RouterSettings(**router))), dep  # type: ignore[arg-type]


def _state(pool: Pool, dep: Deployment):  # type: ignore[no-untyped-def]
    return pool._states[dep.id]


def test_warm_dials_hold_capacity_but_sessions_are_never_refused_for_them() -> None:
    pool, dep = _pool(cap=2)
    assert pool.claim_warm_dial(dep, 0.0) and pool.claim_warm_dial(dep, 0.0)
    assert not pool.claim_warm_dial(dep, 0.0)  # at the cap
    pool.warm_dial_done(dep, 1.0, ok=True, handshake_seconds=0.3)
    pool.warm_dial_done(dep, 1.0, ok=True, handshake_seconds=0.3)
    # Both slots are warm, yet a session gets in: it takes one (no excess)...
    sel = pool.select("g", 2.0)
    assert sel.next(2.0) == dep
    pool.warm_taken(dep, 2.0)
    sel.adopted(dep)
    assert pool.warm_excess(dep) == 0
    # ...and a second session that cannot use the other one must displace it.
    sel = pool.select("g", 3.0)
    assert sel.next(3.0) == dep
    assert pool.warm_excess(dep) == 1
    pool.warm_closed(dep)
    assert pool.warm_excess(dep) == 0
    assert _state(pool, dep).active == 2


def test_warm_dial_failures_feed_health_and_cooldown_stops_warming() -> None:
    pool, dep = _pool(cap=None, allowed_fails=2, cooldown_time=10.0, max_ejection_percent=100)
    for _ in range(2):
        assert pool.claim_warm_dial(dep, 0.0)
        pool.warm_dial_done(dep, 0.0, ok=False, kind="refused")
    state = _state(pool, dep)
    assert state.phase is Phase.EJECTED and state.last_error == "refused"
    assert not pool.may_keep_warm(dep, 5.0)
    assert not pool.claim_warm_dial(dep, 5.0)
    # Half-open: the trial belongs to a session or a probe, not to a warm dial.
    assert not pool.may_keep_warm(dep, 10.0)
    assert state.phase is Phase.HALF_OPEN
    sel = pool.select("g", 10.0)
    assert sel.next(10.0) == dep and sel.is_trial(dep)  # a trial session, dialed fresh
    sel.succeeded(dep, 10.0, 0.1)
    assert pool.may_keep_warm(dep, 10.0) and pool.claim_warm_dial(dep, 10.0)


def test_warm_dials_count_for_rpm_and_a_taken_one_counts_once() -> None:
    pool, dep = _pool(cap=None, rpm=2)
    assert pool.claim_warm_dial(dep, 0.0) and pool.claim_warm_dial(dep, 0.0)
    assert not pool.claim_warm_dial(dep, 0.0)
    pool.warm_dial_done(dep, 0.1, ok=True)
    pool.warm_dial_done(dep, 0.1, ok=True)
    # At the rpm limit, sessions still get in while a warm connection is idle.
    for at in (1.0, 2.0):
        sel = pool.select("g", at)
        assert sel.next(at) == dep
        pool.warm_taken(dep, at)
        sel.adopted(dep)
    assert len(_state(pool, dep).recent_starts) == 2
    sel = pool.select("g", 3.0)
    assert sel.next(3.0) is None  # nothing warm left: the limit holds again


def test_a_session_let_in_by_warm_idle_may_not_dial_fresh_over_rpm() -> None:
    pool, dep = _pool(cap=None, rpm=1)
    assert pool.claim_warm_dial(dep, 0.0)
    pool.warm_dial_done(dep, 0.1, ok=True)
    sel = pool.select("g", 1.0)
    assert sel.next(1.0) == dep
    assert not pool.fresh_dial_allowed(dep, 1.0)


def test_changed_or_removed_deployments_cannot_warm() -> None:
    pool, dep = _pool()
    other = attrs.evolve(dep, api_base="ws://elsewhere")
    assert not pool.claim_warm_dial(other, 0.0)
    pool.reconfigure(GatewayConfig(deployments=(attrs.evolve(dep, id="e"),)), 0.0)
    assert not pool.may_keep_warm(dep, 0.0)
    # Settling calls for a forgotten deployment are harmless.
    pool.warm_closed(dep)
    pool.warm_dial_abandoned(dep)


def test_a_warm_pool_change_alone_keeps_health() -> None:
    pool, dep = _pool(allowed_fails=1, cooldown_time=10.0, max_ejection_percent=100)
    assert pool.claim_warm_dial(dep, 0.0)
    pool.warm_dial_done(dep, 0.0, ok=False, kind="refused")
    resized = attrs.evolve(dep, warm_pool=WarmPoolSettings(size=1))
    pool.reconfigure(GatewayConfig(deployments=(resized,)), 1.0)
    assert _state(pool, resized).phase is Phase.EJECTED


OPS = st.lists(
    st.sampled_from(
        ["session", "session_mismatch", "end", "claim", "dial_ok", "dial_fail", "dial_cancel",
         "close_idle", "tick"]
    ),
    max_size=80,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), OPS)
def test_sessions_plus_warm_connections_never_exceed_the_cap(cap: int, ops: list[str]) -> None:
    """The gateway's moves, in any order: the deployment never holds more than its cap."""
    pool, dep = _pool(cap=cap, allowed_fails=1000)
    state = _state(pool, dep)
    now = 0.0
    sessions = 0
    dialing = 0
    idle = 0
    for op in ops:
        now += 0.5
        if op in ("session", "session_mismatch"):
            sel = pool.select("g", now)
            if sel.next(reserved := now) is None:
                assert sessions >= cap  # refused only when real sessions fill it
                continue
            if op == "session" and idle:
                pool.warm_taken(dep, reserved)
                sel.adopted(dep)
                idle -= 1
            else:
                for _ in range(pool.warm_excess(dep)):  # what WarmPools.shed does
                    if idle:
                        pool.warm_closed(dep)
                        idle -= 1
                    else:
                        pool.warm_dial_abandoned(dep)
                        dialing -= 1
                sel.succeeded(dep, now, 0.3)
            sessions += 1
        elif op == "end" and sessions:
            pool.session_ended(dep, now, abnormal=False, duration=60.0)
            sessions -= 1
        elif op == "claim" and pool.claim_warm_dial(dep, now):
            dialing += 1
        elif op in ("dial_ok", "dial_fail") and dialing:
            pool.warm_dial_done(dep, now, ok=op == "dial_ok", kind="refused")
            dialing -= 1
            idle += op == "dial_ok"
        elif op == "dial_cancel" and dialing:
            pool.warm_dial_abandoned(dep)
            dialing -= 1
        elif op == "close_idle" and idle:
            pool.warm_closed(dep)
            idle -= 1
        elif op == "tick":
            now += 61.0
        assert (state.active, state.warm_idle, state.warm_dialing) == (sessions, idle, dialing)
        assert sessions + idle + dialing <= cap
