"""Database keys as plain data, and the decisions made about them: valid, in budget, in rate.

Pure: time enters as ``now`` (UNIX seconds, wall clock: budgets reset on the calendar,
and several hosts must agree). :class:`KeyRecord` mirrors one row of the keys table;
the field names are LiteLLM's (``LiteLLM_VerificationToken``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import attrs

from rtgate.errors import BudgetExceeded, DatabaseUnavailable, TooManySessions, Unauthenticated

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w|mo|y)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400,
                 "y": 365 * 86400}  # fmt: skip


def duration_seconds(text: str) -> float:
    """LiteLLM's durations: ``"30s"``, ``"30m"``, ``"1h"``, ``"30d"``, ``"2w"``, ``"1mo"`` (30 days),
    ``"1y"`` (365 days). :class:`ValueError` otherwise."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like 30s, 30m, 1h, 30d, 1mo")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def next_reset(reset_at: float, duration: float, now: float) -> float:
    """The first reset time after ``now`` on the schedule ``reset_at + k * duration``."""
    if reset_at > now:
        return reset_at
    periods = math.floor((now - reset_at) / duration) + 1
    return reset_at + periods * duration


@attrs.frozen
class KeyRecord:
    """One database key (never the key itself: ``token`` is its sha256 hex)."""

    token: str
    key_alias: str | None = None
    key_name: str | None = None
    """``sk-...abcd``: the last characters, so humans can tell keys apart."""
    models: tuple[str, ...] = ()
    """Model groups this key may use; empty = all (LiteLLM's convention)."""
    spend: float = 0.0
    max_budget: float | None = None
    budget_duration: str | None = None
    budget_reset_at: float | None = None
    expires: float | None = None
    max_parallel_requests: int | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    metadata: Mapping[str, object] = attrs.field(factory=dict)
    user_id: str | None = None
    team_id: str | None = None
    blocked: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def label(self) -> str:
        """What logs and metrics call this key: its alias, or ``key-`` + 8 hex of its hash."""
        return self.key_alias or f"key-{self.token[:8]}"

    @property
    def team(self) -> str | None:
        """The team spend accrues to: ``team_id``, else ``metadata.team`` (LiteLLM's two places)."""
        team = self.team_id or self.metadata.get("team")
        return str(team) if team is not None else None

    @property
    def user(self) -> str | None:
        user = self.user_id or self.metadata.get("user")
        return str(user) if user is not None else None

    def spend_at(self, now: float) -> float:
        """Spend in the current budget period (0 once a reset is due, before it is written)."""
        if self.budget_reset_at is not None and self.budget_reset_at <= now:
            return 0.0
        return self.spend


def abbreviate(key: str) -> str:
    """LiteLLM's ``key_name``: ``sk-...`` plus the last 4 characters."""
    return f"sk-...{key[-4:]}"


@attrs.frozen
class Standing:
    """What this host knows about a key beyond its row: spend not yet written, recent tokens."""

    pending_spend: float = 0.0
    """Spend of responses finished here and not yet in the database."""
    tokens_last_minute: int = 0
    """Tokens of this key's responses in the last 60 s (every host, as of the last refresh)."""


def check_usable(record: KeyRecord, now: float) -> None:
    """Refuse a blocked or expired key (401, as LiteLLM does)."""
    if record.blocked:
        raise Unauthenticated("Authentication Error, Key is blocked. Update via /key/unblock")
    if record.expires is not None and record.expires <= now:
        raise Unauthenticated("Authentication Error - Expired Key")


def check_budget(record: KeyRecord, standing: Standing, now: float) -> None:
    """Refuse a key at or over its ``max_budget`` (LiteLLM's message and type)."""
    if record.max_budget is None:
        return
    spend = record.spend_at(now) + standing.pending_spend
    if spend >= record.max_budget:
        raise BudgetExceeded(
            f"Authentication Error - Budget has been exceeded! Current cost: {spend:.6g}, "
            f"Max budget: {record.max_budget:g}"
        )


def check_tpm(record: KeyRecord, standing: Standing) -> None:
    """Refuse a key whose tokens in the last minute reached its ``tpm_limit`` (429)."""
    if record.tpm_limit is not None and standing.tokens_last_minute >= record.tpm_limit:
        raise TooManySessions(
            f"key over its tpm_limit ({record.tpm_limit} tokens per minute)", retry_after=60.0
        )


def check_database(record: KeyRecord, database_up: bool, allow_when_down: bool) -> None:
    """While the database is unreachable a budgeted key's spend is not known everywhere:
    refuse its new sessions (503) unless ``allow_requests_on_db_unavailable`` is set."""
    if database_up or allow_when_down or record.max_budget is None:
        return
    raise DatabaseUnavailable(
        "the spend database is unreachable; sessions of budgeted keys resume when it is back"
    )


def admit(
    record: KeyRecord,
    standing: Standing,
    now: float,
    *,
    database_up: bool = True,
    allow_when_down: bool = False,
) -> None:
    """Every check a database key passes before a session of it is dialed."""
    check_usable(record, now)
    check_database(record, database_up, allow_when_down)
    check_budget(record, standing, now)
    check_tpm(record, standing)
