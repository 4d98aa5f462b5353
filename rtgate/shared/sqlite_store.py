"""The shared store of one host's workers: a SQLite file in the supervisor's runtime directory.

Every call is one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock makes
the read-check-write of an admission atomic across the worker processes, with
no service to run. WAL mode keeps a transaction to a few hundred microseconds
on the runtime directory's file system. The clock is the host's wall clock,
which every worker shares. The file lives as long as the supervisor; a worker
that dies leaves leases that expire with its lease time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence

from rtgate.pool.quota import WINDOW_SECONDS, Claim, Refusal, check
from rtgate.shared.store import (
    DEPLOYMENT_SCOPE_PREFIX,
    TRIAL_SECONDS_MIN,
    Grant,
    SharedView,
    StoreUnavailable,
    Verdict,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (scope TEXT, entry TEXT, member TEXT, expires REAL,
                                 PRIMARY KEY (scope, entry));
CREATE TABLE IF NOT EXISTS starts (scope TEXT, entry TEXT, at REAL);
CREATE INDEX IF NOT EXISTS starts_scope ON starts (scope, at);
CREATE INDEX IF NOT EXISTS starts_entry ON starts (scope, entry);
CREATE TABLE IF NOT EXISTS start_counts (scope TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS health (deployment TEXT PRIMARY KEY, until REAL, level INTEGER);
CREATE TABLE IF NOT EXISTS trial (deployment TEXT PRIMARY KEY, entry TEXT, expires REAL);
CREATE TABLE IF NOT EXISTS members (member TEXT PRIMARY KEY, expires REAL);
"""


OPEN_TIMEOUT = 10.0
"""How long opening the file may wait for the other workers opening it at the same time."""


class SqliteStore:
    """:class:`rtgate.shared.store.SharedStore` over one SQLite file."""

    kind = "host"

    def __init__(self, path: str, member: str) -> None:
        self.path = path
        self.member = member
        self._lock = threading.Lock()
        """One transaction at a time on this process's connection (calls come from threads)."""
        try:
            # One connection per process, used from one worker thread at a time.
            self._db = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._prepare()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"shared state file {path}: {exc}") from exc

    def _prepare(self) -> None:
        """WAL mode, the schema and the kept counts, retried while another worker does the
        same: switching a new file to WAL answers "database is locked" at once, without
        SQLite's busy wait, when workers start together."""
        deadline = time.monotonic() + OPEN_TIMEOUT
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=OFF")  # the state dies with the host
                self._db.executescript(_SCHEMA)
                # The counts are kept with the rows; rebuilt here in case a file predates them.
                with self._transaction() as db:
                    db.execute("DELETE FROM start_counts")
                    db.execute(
                        "INSERT INTO start_counts SELECT scope, count(*) FROM starts GROUP BY scope"
                    )
                return
            except (sqlite3.OperationalError, StoreUnavailable) as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                time.sleep(0.02)  # start-up only: the loop has not begun serving yet

    def _transaction(self) -> _Tx:
        return _Tx(self._db, self.path, self._lock)

    def take(
        self, lease: str, claims: Sequence[Claim], ttl: float, deployment: str | None = None
    ) -> Grant:
        with self._transaction() as db:
            now = time.time()
            trial = False
            if deployment is not None:
                row = db.execute(
                    "SELECT until FROM health WHERE deployment = ?", (deployment,)
                ).fetchone()
                if row is not None:
                    scope = DEPLOYMENT_SCOPE_PREFIX + deployment
                    if now < row[0]:
                        return Grant(Refusal(scope, "cooling", row[0] - now))
                    db.execute("DELETE FROM trial WHERE expires <= ?", (now,))
                    busy = db.execute(
                        "SELECT 1 FROM trial WHERE deployment = ?", (deployment,)
                    ).fetchone()
                    if busy is not None:
                        return Grant(Refusal(scope, "cooling", TRIAL_SECONDS_MIN))
                    db.execute("INSERT INTO trial VALUES (?, ?, ?)", (deployment, lease, now + ttl))
                    trial = True
            for claim in claims:
                db.execute("DELETE FROM held WHERE scope = ? AND expires <= ?", (claim.scope, now))
                _forget_starts(
                    db, claim.scope, "DELETE FROM starts WHERE scope = ? AND at <= ?",
                    now - WINDOW_SECONDS,
                )  # fmt: skip
                if not claim.binding:
                    continue
                (active,) = db.execute(
                    "SELECT count(*) FROM held WHERE scope = ?", (claim.scope,)
                ).fetchone()
                # A kept count, not count(*) over the window's rows: that grew with the
                # start rate (36 000 rows at 600 setups/s) and held the write lock for it.
                row = db.execute(
                    "SELECT n FROM start_counts WHERE scope = ?", (claim.scope,)
                ).fetchone()
                started = row[0] if row is not None else 0
                counted: list[float] = []
                if claim.per_minute is not None and started >= claim.per_minute:
                    # Only the start that is per_minute-th from the end decides the retry time.
                    (oldest,) = db.execute(
                        "SELECT at FROM starts WHERE scope = ? ORDER BY at LIMIT 1 OFFSET ?",
                        (claim.scope, started - claim.per_minute),
                    ).fetchone()
                    counted = [oldest] * claim.per_minute
                refusal = check(claim, active, counted, now)
                if refusal is not None:
                    db.rollback()
                    return Grant(refusal)
            for claim in claims:
                db.execute(
                    "INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?)",
                    (claim.scope, lease, self.member, now + ttl),
                )
                db.execute("INSERT INTO starts VALUES (?, ?, ?)", (claim.scope, lease, now))
                db.execute(
                    "INSERT INTO start_counts VALUES (?, 1)"
                    " ON CONFLICT (scope) DO UPDATE SET n = n + 1",
                    (claim.scope,),
                )
            return Grant(None, trial)

    def give_back(self, lease: str, scopes: Sequence[str], started: bool) -> None:
        self.give_back_many([(lease, scopes, started)])

    def give_back_many(self, ends: Sequence[tuple[str, Sequence[str], bool]]) -> None:
        with self._transaction() as db:
            for lease, scopes, started in ends:
                for scope in scopes:
                    db.execute("DELETE FROM held WHERE scope = ? AND entry = ?", (scope, lease))
                    if not started:
                        _forget_starts(
                            db, scope, "DELETE FROM starts WHERE scope = ? AND entry = ?", lease
                        )

    def renew(self, leases: Mapping[str, Sequence[str]], ttl: float) -> int:
        with self._transaction() as db:
            now = time.time()
            db.execute("INSERT OR REPLACE INTO members VALUES (?, ?)", (self.member, now + ttl))
            db.execute("DELETE FROM members WHERE expires <= ?", (now,))
            db.executemany(
                "INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?)",
                [
                    (scope, lease, self.member, now + ttl)
                    for lease, scopes in leases.items()
                    for scope in scopes
                ],
            )
            (members,) = db.execute("SELECT count(*) FROM members").fetchone()
            return int(members)

    def eject(self, deployment: str, seconds: float, level: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO health VALUES (?, ?, ?)",
                (deployment, time.time() + seconds, level),
            )
            db.execute("DELETE FROM trial WHERE deployment = ?", (deployment,))

    def restore(self, deployment: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM health WHERE deployment = ?", (deployment,))
            db.execute("DELETE FROM trial WHERE deployment = ?", (deployment,))

    def end_trial(self, deployment: str, lease: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM trial WHERE deployment = ? AND entry = ?", (deployment, lease))

    def verdicts(self, deployments: Sequence[str]) -> list[Verdict]:
        wanted = set(deployments)
        with self._transaction() as db:
            now = time.time()
            rows = db.execute("SELECT deployment, until, level FROM health").fetchall()
        return [
            Verdict(dep, max(until - now, 0.0), int(level))
            for dep, until, level in rows
            if dep in wanted
        ]

    def view(self) -> SharedView:
        with self._transaction() as db:
            now = time.time()
            rows = db.execute(
                "SELECT scope, member, count(*) FROM held WHERE expires > ? GROUP BY scope, member",
                (now,),
            ).fetchall()
            health = db.execute("SELECT deployment, until, level FROM health").fetchall()
            (members,) = db.execute(
                "SELECT count(*) FROM members WHERE expires > ?", (now,)
            ).fetchone()
        active: dict[str, int] = {}
        by_member: dict[str, dict[str, int]] = {}
        for scope, member, count in rows:
            active[scope] = active.get(scope, 0) + count
            by_member.setdefault(member, {})[scope] = count
        verdicts = [Verdict(d, max(u - now, 0.0), int(lv)) for d, u, lv in health]
        return SharedView(active, by_member, verdicts, int(members))

    def close(self) -> None:
        self._db.close()


def _forget_starts(db: _Tx, scope: str, delete: str, arg: object) -> None:
    """Delete some of ``scope``'s start rows and take them off its kept count."""
    gone = db.execute(delete, (scope, arg)).rowcount
    if gone > 0:
        db.execute("UPDATE start_counts SET n = n - ? WHERE scope = ?", (gone, scope))


class _Tx:
    """``with`` block of one ``BEGIN IMMEDIATE`` transaction; any SQLite error is an outage."""

    def __init__(self, db: sqlite3.Connection, path: str, lock: threading.Lock) -> None:
        self.db = db
        self.path = path
        self.lock = lock

    def __enter__(self) -> _Tx:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.lock.release()
            raise StoreUnavailable(f"shared state file {self.path}: {exc}") from exc
        return self

    def execute(self, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    def executemany(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        self.db.executemany(sql, rows)

    def rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        try:
            if self.db.in_transaction:
                self.db.execute("COMMIT" if exc is None else "ROLLBACK")
        except sqlite3.Error as failed:
            raise StoreUnavailable(f"shared state file {self.path}: {failed}") from failed
        finally:
            self.lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StoreUnavailable(f"shared state file {self.path}: {exc}") from exc
