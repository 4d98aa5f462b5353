"""The statements: keys, spend logs, budget resets and reports, over one :class:`Conn`.

Blocking functions, called inside :meth:`Database.run` / ``transaction_sync``. Keys are
stored by their sha256 hex (``token``); the key itself never reaches the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from rtgate.governance.db import Conn
from rtgate.spend.keys import KeyRecord, duration_seconds, next_reset
from rtgate.spend.records import SpendRecord

_KEY_COLUMNS = (
    "token", "key_alias", "key_name", "models", "spend", "max_budget", "budget_duration",
    "budget_reset_at", "expires", "max_parallel_requests", "rpm_limit", "tpm_limit",
    "metadata", "user_id", "team_id", "blocked", "created_at", "updated_at",
)  # fmt: skip

_SPEND_COLUMNS = (
    "request_id", "api_key", "key_alias", "user_id", "team_id", "model_group", "model",
    "deployment", "provider", "session_id", "response_id", "start_time", "prompt_tokens",
    "completion_tokens", "total_tokens", "usage", "spend",
)  # fmt: skip


def _record(row: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        token=row["token"], key_alias=row["key_alias"], key_name=row["key_name"],
        models=tuple(orjson.loads(row["models"] or "[]")), spend=float(row["spend"] or 0.0),
        max_budget=row["max_budget"], budget_duration=row["budget_duration"],
        budget_reset_at=row["budget_reset_at"], expires=row["expires"],
        max_parallel_requests=row["max_parallel_requests"], rpm_limit=row["rpm_limit"],
        tpm_limit=row["tpm_limit"], metadata=orjson.loads(row["metadata"] or "{}"),
        user_id=row["user_id"], team_id=row["team_id"], blocked=bool(row["blocked"]),
        created_at=float(row["created_at"]), updated_at=float(row["updated_at"]),
    )  # fmt: skip


def _row(record: KeyRecord) -> tuple[object, ...]:
    values: dict[str, object] = {name: getattr(record, name) for name in _KEY_COLUMNS}
    values["models"] = orjson.dumps(list(record.models)).decode()
    values["metadata"] = orjson.dumps(dict(record.metadata)).decode()
    values["blocked"] = 1 if record.blocked else 0
    return tuple(values[name] for name in _KEY_COLUMNS)


def insert_key(conn: Conn, record: KeyRecord) -> None:
    marks = ", ".join("?" for _ in _KEY_COLUMNS)
    conn.execute(f"INSERT INTO rtgate_keys ({', '.join(_KEY_COLUMNS)}) VALUES ({marks})",
                 _row(record))  # fmt: skip


def replace_key(conn: Conn, record: KeyRecord) -> None:
    """Write every column of an existing key (update, block, unblock)."""
    sets = ", ".join(f"{name} = ?" for name in _KEY_COLUMNS[1:])
    conn.execute(
        f"UPDATE rtgate_keys SET {sets} WHERE token = ?", (*_row(record)[1:], record.token)
    )


def get_key(conn: Conn, token: str) -> KeyRecord | None:
    rows = conn.rows("SELECT * FROM rtgate_keys WHERE token = ?", (token,))
    return _record(rows[0]) if rows else None


def key_by_alias(conn: Conn, alias: str) -> KeyRecord | None:
    rows = conn.rows("SELECT * FROM rtgate_keys WHERE key_alias = ?", (alias,))
    return _record(rows[0]) if rows else None


def all_keys(conn: Conn) -> list[KeyRecord]:
    return [_record(row) for row in conn.rows("SELECT * FROM rtgate_keys")]


def list_keys(
    conn: Conn, *, filters: Mapping[str, str], page: int, size: int
) -> tuple[list[KeyRecord], int]:
    """One page of keys (newest first) matching ``filters`` (column = value), and the total."""
    where, params = _where(filters.items())
    total = conn.rows(f"SELECT COUNT(*) AS n FROM rtgate_keys{where}", params)[0]["n"]
    rows = conn.rows(
        f"SELECT * FROM rtgate_keys{where} ORDER BY created_at DESC, token DESC LIMIT ? OFFSET ?",
        (*params, size, (page - 1) * size),
    )
    return [_record(row) for row in rows], int(total)


def delete_keys(conn: Conn, tokens: Sequence[str]) -> list[str]:
    """Delete these keys; the tokens that existed."""
    found = []
    for token in tokens:
        if conn.execute("DELETE FROM rtgate_keys WHERE token = ?", (token,)).rowcount:
            found.append(token)
    return found


def tokens_since(conn: Conn, since: float) -> dict[str, int]:
    """Tokens per key of responses that ended at or after ``since`` (every host's)."""
    rows = conn.rows(
        "SELECT api_key, SUM(total_tokens) AS n FROM rtgate_spend_logs WHERE start_time >= ? "
        "GROUP BY api_key",
        (since,),
    )
    return {row["api_key"]: int(row["n"] or 0) for row in rows}


def write_spend(conn: Conn, records: Iterable[SpendRecord]) -> list[SpendRecord]:
    """Insert spend rows and add each new one to its key's spend; the rows that were new.

    ``request_id`` is the primary key: a row already there (a retry after a lost commit
    acknowledgement, a replayed spill file) is skipped, and its key is not charged again.
    """
    marks = ", ".join("?" for _ in _SPEND_COLUMNS)
    insert = (
        f"INSERT INTO rtgate_spend_logs ({', '.join(_SPEND_COLUMNS)}) VALUES ({marks}) "
        "ON CONFLICT (request_id) DO NOTHING"
    )
    new = []
    for record in records:
        values = [getattr(record, name) for name in _SPEND_COLUMNS]
        values[_SPEND_COLUMNS.index("usage")] = orjson.dumps(dict(record.usage)).decode()
        if conn.execute(insert, values).rowcount != 1:
            continue
        new.append(record)
        if record.spend and record.api_key:
            conn.execute(
                "UPDATE rtgate_keys SET spend = spend + ? WHERE token = ?",
                (record.spend, record.api_key),
            )
    return new


def reset_due_budgets(conn: Conn, now: float) -> int:
    """Zero the spend of keys whose budget period ended; schedule the next reset.

    Compare-and-set on ``budget_reset_at``, so hosts running this at once reset a key once.
    """
    rows = conn.rows(
        "SELECT token, budget_duration, budget_reset_at FROM rtgate_keys "
        "WHERE budget_reset_at IS NOT NULL AND budget_reset_at <= ?",
        (now,),
    )
    done = 0
    for row in rows:
        try:
            period = duration_seconds(row["budget_duration"] or "")
        except ValueError:
            continue
        following = next_reset(float(row["budget_reset_at"]), period, now)
        done += conn.execute(
            "UPDATE rtgate_keys SET spend = 0, budget_reset_at = ?, updated_at = ? "
            "WHERE token = ? AND budget_reset_at = ?",
            (following, now, row["token"], row["budget_reset_at"]),
        ).rowcount
    return done


def spend_logs(
    conn: Conn, *, filters: Mapping[str, str], start: float | None, end: float | None, limit: int
) -> list[dict[str, Any]]:
    """Spend rows matching ``filters`` (column = value) in ``[start, end)``, newest first."""
    where, params = _where(filters.items(), start, end)
    rows = conn.rows(
        f"SELECT * FROM rtgate_spend_logs{where} ORDER BY start_time DESC, request_id LIMIT ?",
        (*params, limit),
    )
    for row in rows:
        row["usage"] = orjson.loads(row["usage"] or "{}")
    return rows


def spend_report(
    conn: Conn, *, start: float | None, end: float | None, filters: Mapping[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Spend, tokens and responses summed by key, model group, key and group, team and user."""
    where, params = _where(filters.items(), start, end)
    sums = ("SUM(spend) AS spend, SUM(total_tokens) AS total_tokens, "
            "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
            "COUNT(*) AS responses")  # fmt: skip
    report: dict[str, list[dict[str, Any]]] = {}
    groupings = {
        "by_key": ("api_key", "key_alias"),
        "by_model_group": ("model_group",),
        "by_key_and_model_group": ("api_key", "key_alias", "model_group"),
        "by_team": ("team_id",),
        "by_user": ("user_id",),
    }
    for name, columns in groupings.items():
        cols = ", ".join(columns)
        rows = conn.rows(
            f"SELECT {cols}, {sums} FROM rtgate_spend_logs{where} GROUP BY {cols} "
            "ORDER BY spend DESC",
            params,
        )
        for row in rows:
            row["spend"] = float(row["spend"] or 0.0)
            for field in ("total_tokens", "prompt_tokens", "completion_tokens", "responses"):
                row[field] = int(row[field] or 0)
        report[name] = rows
    return report


def _where(
    filters: Iterable[tuple[str, str]], start: float | None = None, end: float | None = None
) -> tuple[str, tuple[object, ...]]:
    clauses: list[str] = []
    params: list[object] = []
    for column, value in filters:
        clauses.append(f"{column} = ?")
        params.append(value)
    if start is not None:
        clauses.append("start_time >= ?")
        params.append(start)
    if end is not None:
        clauses.append("start_time < ?")
        params.append(end)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
