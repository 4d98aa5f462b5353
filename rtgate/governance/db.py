"""One database, SQLite or PostgreSQL, used from worker threads; migrations applied at start.

Which driver and why: stdlib ``sqlite3`` for the embedded default, and ``psycopg`` 3
with ``psycopg_pool`` for PostgreSQL, both synchronous and run in
``trio.to_thread.run_sync``. psycopg's async API is built on asyncio (its waits call
asyncio's loop) and does not run under trio at all, so the async option is an asyncio
loop on a thread, which buys nothing over the thread itself (``bench/db_setup.py``
has the measurement). The database is touched at session setup (only for a key
this host has never seen), at each response's end (by the spend writer task) and by
the key refresh: never per frame. No ORM: a dozen statements in the common subset
of both dialects are plainer than a mapping layer.

URLs: ``postgresql://user:pass@host:port/db`` (or ``postgres://``), ``sqlite:///PATH``
(relative path; ``sqlite:////abs/path`` absolute, as SQLAlchemy writes them), or None
for ``rtgate.db`` in the state directory (:func:`state_dir`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio

from rtgate.governance.schema import LATEST, MIGRATIONS

T = TypeVar("T")

_PG_LOCK_ID = 7_270_018
"""``pg_advisory_xact_lock`` key that serialises migrations of hosts starting together."""


def state_dir() -> Path:
    """Where rtgate keeps its embedded database: ``$RTGATE_STATE_DIR``, systemd's
    ``$STATE_DIRECTORY`` (``StateDirectory=rtgate``: /var/lib/rtgate), else
    ``$XDG_STATE_HOME/rtgate`` or ``~/.local/state/rtgate``."""
    for var in ("RTGATE_STATE_DIR", "STATE_DIRECTORY"):
        value = os.environ.get(var)
        if value:
            return Path(value.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) / "rtgate" if xdg else Path.home() / ".local" / "state" / "rtgate"


def describe(url: str | None) -> str:
    """The URL without its password, for logs and readiness."""
    if url is None:
        return f"sqlite:///{state_dir() / 'rtgate.db'}"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def dialect_of(url: str | None) -> str:
    """``sqlite`` or ``postgresql``; :class:`ValueError` for anything else."""
    if url is None or url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    raise ValueError(
        "database_url must start with postgresql://, postgres:// or sqlite:/// "
        f"(got {url.split(':', 1)[0]}:...)"
    )


class Conn:
    """A connection inside one transaction, speaking ``?`` placeholders in both dialects."""

    def __init__(self, raw: Any, dialect: str) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[object] = ()) -> Any:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        return self.raw.execute(sql, tuple(params))

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        cursor = self.execute(sql, params)
        if self.dialect == "sqlite":
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return list(cursor.fetchall())


class Database:
    """The configured database. Blocking calls run on threads via :meth:`run`."""

    def __init__(self, url: str | None, *, pool_size: int = 4) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self.description = describe(url)
        self._pool_size = pool_size
        self._pool: Any = None
        self._sqlite: sqlite3.Connection | None = None
        self._sqlite_lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1 if self.dialect == "sqlite" else pool_size)

    # -- blocking API (worker threads, the CLI) -------------------------------------

    def open_sync(self) -> None:
        """Connect (raises on failure); idempotent."""
        if self.dialect == "sqlite":
            if self._sqlite is None:
                path = self._sqlite_path()
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                conn = sqlite3.connect(
                    path, timeout=10.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                self._sqlite = conn
            return
        if self._pool is None:
            try:
                from psycopg.rows import dict_row
                from psycopg_pool import ConnectionPool
            except ImportError:
                raise RuntimeError(
                    "a postgresql:// database_url needs the PostgreSQL driver: "
                    "pip install 'rtgate[postgres]'"
                ) from None

            pool = ConnectionPool(
                self.url or "",
                min_size=1,
                max_size=self._pool_size,
                kwargs={"row_factory": dict_row, "connect_timeout": 5},
                open=False,
                timeout=5.0,
                check=ConnectionPool.check_connection,  # a database restart leaves dead ones
                name="rtgate",
            )
            pool.open(wait=True, timeout=5.0)
            self._pool = pool

    def close_sync(self) -> None:
        with self._sqlite_lock:  # never while another thread is inside a transaction
            if self._sqlite is not None:
                self._sqlite.close()
                self._sqlite = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def transaction_sync(self, fn: Callable[[Conn], T], write: bool = False) -> T:
        """Run ``fn`` in one transaction: committed if it returns, rolled back if it raises."""
        self.open_sync()
        if self.dialect == "sqlite":
            assert self._sqlite is not None
            with self._sqlite_lock:
                raw = self._sqlite
                raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = fn(Conn(raw, "sqlite"))
                except BaseException:
                    raw.execute("ROLLBACK")
                    raise
                raw.execute("COMMIT")
                return result
        with self._pool.connection() as raw:
            with raw.transaction():
                return fn(Conn(raw, "postgresql"))

    def upgrade_sync(self) -> list[int]:
        """Apply every migration not yet applied; the versions applied now."""
        return self.transaction_sync(_upgrade, write=True)

    def version_sync(self) -> int:
        return self.transaction_sync(_version)

    # -- from trio -----------------------------------------------------------------

    async def run(self, fn: Callable[[Conn], T], *, write: bool = False) -> T:
        """:meth:`transaction_sync` on a worker thread (the trio task waits, nothing else does)."""
        return await trio.to_thread.run_sync(
            self.transaction_sync, fn, write, limiter=self._limiter
        )

    def _sqlite_path(self) -> Path:
        if self.url is None:
            return state_dir() / "rtgate.db"
        return Path(self.url[len("sqlite:///") :])


def _version(conn: Conn) -> int:
    _ensure_schema_table(conn)
    rows = conn.rows("SELECT MAX(version) AS v FROM rtgate_schema")
    return int(rows[0]["v"] or 0) if rows else 0


def _ensure_schema_table(conn: Conn) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS rtgate_schema (version INTEGER PRIMARY KEY, "
        "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    )


def _upgrade(conn: Conn) -> list[int]:
    if conn.dialect == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_ID,))
    _ensure_schema_table(conn)
    applied = {int(r["version"]) for r in conn.rows("SELECT version FROM rtgate_schema")}
    if applied and max(applied) > LATEST:
        raise RuntimeError(
            f"the database schema is at version {max(applied)}, newer than this rtgate "
            f"knows ({LATEST}): upgrade rtgate"
        )
    done = []
    for version, name, statements in MIGRATIONS:
        if version in applied:
            continue
        for statement in statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO rtgate_schema (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, time.time()),
        )
        done.append(version)
    return done
