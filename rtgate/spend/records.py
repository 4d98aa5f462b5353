"""One priced response, as the spend writer stores it and metrics count it.

Pure. ``request_id`` is the idempotency key: ``session id:response id``, so a
response is written once whatever retries, reconnects or restarts happen between
its end and the database.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from rtgate.spend.prices import Prices, TokenCounts, cost, split_usage


@attrs.frozen
class SpendRecord:
    """A row of the spend log (LiteLLM's ``LiteLLM_SpendLogs`` column names where they exist)."""

    request_id: str
    api_key: str
    """sha256 hex of the key ("" for an unauthenticated gateway)."""
    key_alias: str | None
    user_id: str | None
    team_id: str | None
    model_group: str
    model: str
    deployment: str
    provider: str
    session_id: str
    response_id: str
    start_time: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    usage: Mapping[str, float]
    spend: float
    counts: TokenCounts = attrs.field(factory=TokenCounts, eq=False)
    """The split the price was computed from (for the token metrics; not stored)."""

    def to_json(self) -> dict[str, object]:
        """For the spill file (``counts`` is recomputed from ``usage`` on the way back)."""
        return {f.name: getattr(self, f.name) for f in attrs.fields(SpendRecord)
                if f.name != "counts"}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> SpendRecord:
        values = dict(data)
        usage = values.get("usage")
        counts = split_usage(usage) if isinstance(usage, dict) else TokenCounts()
        return cls(**values, counts=counts)  # type: ignore[arg-type]


@attrs.frozen
class Who:
    """Whose spend a session's responses are (fixed for the session)."""

    api_key: str
    key_alias: str | None
    user_id: str | None
    team_id: str | None
    model_group: str
    model: str
    deployment: str
    provider: str
    session_id: str


def price_response(
    who: Who, response_id: str, usage: Mapping[str, int], prices: Prices | None, now: float
) -> SpendRecord:
    """The spend record of one finished response with GA ``usage`` (flattened)."""
    counts = split_usage(usage)
    return SpendRecord(
        request_id=f"{who.session_id}:{response_id}",
        api_key=who.api_key, key_alias=who.key_alias, user_id=who.user_id, team_id=who.team_id,
        model_group=who.model_group, model=who.model, deployment=who.deployment,
        provider=who.provider, session_id=who.session_id, response_id=response_id,
        start_time=now,
        prompt_tokens=counts.input_tokens, completion_tokens=counts.output_tokens,
        total_tokens=counts.input_tokens + counts.output_tokens,
        usage=dict(usage), spend=cost(counts, prices) if prices is not None else 0.0,
        counts=counts,
    )  # fmt: skip


def price_seconds(
    who: Who, seconds: float, prices: Prices | None, now: float, what: str = "connection"
) -> SpendRecord | None:
    """The record of a session's billed time (providers priced per second), or None."""
    if prices is None or not prices.per_second or seconds <= 0:
        return None
    counts = TokenCounts(seconds=seconds)
    return SpendRecord(
        request_id=f"{who.session_id}:{what}",
        api_key=who.api_key, key_alias=who.key_alias, user_id=who.user_id, team_id=who.team_id,
        model_group=who.model_group, model=who.model, deployment=who.deployment,
        provider=who.provider, session_id=who.session_id, response_id=what,
        start_time=now, prompt_tokens=0, completion_tokens=0, total_tokens=0,
        usage={"seconds": seconds}, spend=cost(counts, prices), counts=counts,
    )  # fmt: skip
