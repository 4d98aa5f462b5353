"""The cost function and key rules, as pure functions: properties and the shipped table."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtgate.errors import BudgetExceeded, DatabaseUnavailable, TooManySessions, Unauthenticated
from rtgate.spend.keys import (
    KeyRecord,
    Standing,
    admit,
    duration_seconds,
    next_reset,
)
from rtgate.spend.prices import (
    PRICE_TABLE,
    PRICE_TABLE_DATE,
    Prices,
    TokenCounts,
    cost,
    lookup,
    split_usage,
    usage_cost,
    with_overrides,
)

counts_st = st.builds(
    lambda t, a, i, ct, ca, ci, to, ao: TokenCounts(
        text_in=t, audio_in=a, image_in=i, cached_text=min(ct, t), cached_audio=min(ca, a),
        cached_image=min(ci, i), text_out=to, audio_out=ao,
    ),
    *[st.integers(0, 10**7)] * 8,
)  # fmt: skip
price_st = st.floats(0, 1e-3, allow_nan=False)
prices_st = st.builds(
    Prices,
    input_text=price_st, output_text=price_st,
    input_audio=st.none() | price_st, output_audio=st.none() | price_st,
    input_image=st.none() | price_st, cached_text=st.none() | price_st,
    cached_audio=st.none() | price_st, cached_image=st.none() | price_st,
)  # fmt: skip


@given(counts_st, counts_st, prices_st)
def test_cost_is_additive_per_response(a: TokenCounts, b: TokenCounts, p: Prices) -> None:
    assert math.isclose(cost(a + b, p), cost(a, p) + cost(b, p), rel_tol=1e-9, abs_tol=1e-12)


@given(counts_st, prices_st, st.sampled_from(["text_in", "audio_in", "image_in", "text_out",
                                               "audio_out"]), st.integers(1, 10**6))  # fmt: skip
def test_cost_is_monotone_in_every_token_count(
    c: TokenCounts, p: Prices, field: str, more: int
) -> None:
    bigger = TokenCounts(**{**_as_dict(c), field: getattr(c, field) + more})  # type: ignore[arg-type]
    assert cost(bigger, p) >= cost(c, p)


def _as_dict(c: TokenCounts) -> dict[str, float]:
    import attrs

    return attrs.asdict(c)


@given(counts_st, prices_st, st.integers(0, 10**6))
def test_cached_tokens_are_never_dearer_than_uncached(
    c: TokenCounts, p: Prices, cached: int
) -> None:
    """Moving tokens from uncached to cached never raises the bill (and never charges twice)."""
    moved = min(cached, c.text_in - c.cached_text)
    more_cached = TokenCounts(**{**_as_dict(c), "cached_text": c.cached_text + moved})  # type: ignore[arg-type]
    assert cost(more_cached, p) <= cost(c, p) + 1e-12


def test_cached_tokens_charged_at_the_cached_price_not_twice() -> None:
    prices = Prices(input_text=4e-6, cached_text=0.4e-6, output_text=16e-6)
    usage = {"input_tokens": 1000, "output_tokens": 10,
             "input_token_details.text_tokens": 1000, "input_token_details.cached_tokens": 800,
             "input_token_details.cached_tokens_details.text_tokens": 800}  # fmt: skip
    assert math.isclose(usage_cost(usage, prices), 200 * 4e-6 + 800 * 0.4e-6 + 10 * 16e-6)


def test_usage_without_details_is_text() -> None:
    counts = split_usage({"input_tokens": 12, "output_tokens": 5, "total_tokens": 17})
    assert (counts.text_in, counts.text_out, counts.audio_in) == (12, 5, 0)


def test_overrides_are_litellm_fields_per_token() -> None:
    base = lookup("openai", "gpt-realtime")
    assert base is not None and math.isclose(base.output_audio or 0, 64e-6)
    changed = with_overrides(base, {"output_cost_per_audio_token": 1e-5, "mode": "realtime"})
    assert changed is not None and changed.output_audio == 1e-5
    assert changed.input_text == base.input_text
    assert with_overrides(None, {"input_cost_per_token": 2e-6}) == Prices(input_text=2e-6)
    assert lookup("azure", "my-deployment", base_model="azure/gpt-realtime") == base


def test_the_table_covers_every_provider_and_is_dated() -> None:
    assert PRICE_TABLE_DATE
    assert lookup("gemini", "gemini-2.5-flash-native-audio-preview-09-2025") is not None
    assert lookup("vertex_ai", "gemini-live-2.5-flash") is not None
    assert lookup("bedrock", "amazon.nova-sonic-v1:0") is not None
    assert lookup("bedrock", "amazon.nova-2-sonic-v1:0") is not None
    assert lookup("xai", "grok-voice-latest") is not None
    for provider, table in PRICE_TABLE.items():
        for model, prices in table.items():
            for cached, full in ((prices.cached_text, prices.input_text),
                                 (prices.cached_audio, prices.input_audio)):  # fmt: skip
                assert cached is None or full is None or cached <= full, (provider, model)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("30m", 1800), ("1h", 3600),
                                               ("30d", 30 * 86400), ("1mo", 30 * 86400)])  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@given(st.floats(0, 1e9), st.floats(1, 1e6), st.floats(0, 1e9))
def test_next_reset_is_the_first_after_now(reset_at: float, period: float, now: float) -> None:
    following = next_reset(reset_at, period, now)
    assert following > now or (following == reset_at and reset_at > now)
    assert following - period <= max(now, reset_at - period) + 1e-3


def test_admission_rules() -> None:
    now = 1_000_000.0
    key = KeyRecord(token="t" * 64, max_budget=1.0, spend=0.5, tpm_limit=100)
    admit(key, Standing(), now)
    with pytest.raises(BudgetExceeded):
        admit(key, Standing(pending_spend=0.5), now)  # the spend this host has not written yet
    with pytest.raises(TooManySessions):
        admit(key, Standing(tokens_last_minute=100), now)
    with pytest.raises(DatabaseUnavailable):
        admit(key, Standing(), now, database_up=False)
    admit(key, Standing(), now, database_up=False, allow_when_down=True)
    with pytest.raises(Unauthenticated):
        admit(KeyRecord(token="t" * 64, blocked=True), Standing(), now)
    with pytest.raises(Unauthenticated):
        admit(KeyRecord(token="t" * 64, expires=now - 1), Standing(), now)
    # A reset that is due counts as done even before the database wrote it.
    spent = KeyRecord(token="t" * 64, max_budget=1.0, spend=2.0, budget_reset_at=now - 1)
    admit(spent, Standing(), now)
