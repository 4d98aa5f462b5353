"""The database schema as numbered migrations, applied in order and recorded.

Each migration runs in one transaction together with the row that records it, so a
start-up that dies half-way leaves the schema at the previous version. The SQL is
the common subset of SQLite and PostgreSQL (``DOUBLE PRECISION`` is REAL in SQLite);
times are UNIX seconds (UTC), JSON columns are text.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "keys and spend logs",
        (
            """CREATE TABLE rtgate_keys (
                token TEXT PRIMARY KEY,
                key_alias TEXT,
                key_name TEXT,
                models TEXT NOT NULL DEFAULT '[]',
                spend DOUBLE PRECISION NOT NULL DEFAULT 0,
                max_budget DOUBLE PRECISION,
                budget_duration TEXT,
                budget_reset_at DOUBLE PRECISION,
                expires DOUBLE PRECISION,
                max_parallel_requests INTEGER,
                rpm_limit INTEGER,
                tpm_limit INTEGER,
                metadata TEXT NOT NULL DEFAULT '{}',
                user_id TEXT,
                team_id TEXT,
                blocked INTEGER NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE UNIQUE INDEX rtgate_keys_alias ON rtgate_keys (key_alias)",
            """CREATE TABLE rtgate_spend_logs (
                request_id TEXT PRIMARY KEY,
                api_key TEXT NOT NULL,
                key_alias TEXT,
                user_id TEXT,
                team_id TEXT,
                model_group TEXT NOT NULL,
                model TEXT,
                deployment TEXT,
                provider TEXT,
                session_id TEXT NOT NULL,
                response_id TEXT,
                start_time DOUBLE PRECISION NOT NULL,
                prompt_tokens INTEGER NOT NULL DEFAULT 0,
                completion_tokens INTEGER NOT NULL DEFAULT 0,
                total_tokens INTEGER NOT NULL DEFAULT 0,
                usage TEXT NOT NULL DEFAULT '{}',
                spend DOUBLE PRECISION NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX rtgate_spend_logs_key_time ON rtgate_spend_logs (api_key, start_time)",
            "CREATE INDEX rtgate_spend_logs_time ON rtgate_spend_logs (start_time)",
            "CREATE INDEX rtgate_spend_logs_group_time ON rtgate_spend_logs (model_group, start_time)",
        ),
    ),
)
"""``(version, what it does, statements)``, oldest first. Never edit a shipped one: add the next."""

LATEST = MIGRATIONS[-1][0]
