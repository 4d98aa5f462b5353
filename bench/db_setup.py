"""Session setup with a database key (SQLite, PostgreSQL) against a config-file key.

Each run starts rtgate in this process on the built-in mock model, then opens
sessions one after another (connect, ``session.created``, close) with one key and
reports setups per second and the setup latency p50/p99. A database key is read
from the database the first time this host sees it and from memory after that,
so the difference is the admission checks, the per-response accounting and the
spend writer (the database is written at each response's end, off the relay).

Also answers the driver question of ``rtgate/governance/db.py``: psycopg's async
connection under trio (it fails: psycopg's async API runs on asyncio), and a
query's round trip through ``trio.to_thread.run_sync`` against a direct call.

    .venv/bin/python bench/db_setup.py --sessions 300 [--postgres URL]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from typing import Any

import trio
from trio_websocket import open_websocket_url

from rtgate.config.load import parse_text
from rtgate.governance import store
from rtgate.governance.db import Database
from rtgate.spend.keys import KeyRecord
from rtgate.testing.gateway import open_gateway

MASTER = "sk-bench-master-key-0000"
FILE_KEY = "sk-bench-config-key-0000"
DB_KEY = "sk-bench-database-key-00"


def config_text(database: str | None) -> str:
    db = f"\n  database_url: {database}" if database else ""
    return f"""
model_list:
  - model_name: m
    litellm_params: {{model: mock/gpt-realtime}}
general_settings:
  master_key: {MASTER}{db}
rtgate:
  keys: [{{alias: file, key: {FILE_KEY}}}]
  limits: {{ping_interval: 0}}
"""


def add_db_key(database: str | None) -> None:
    db = Database(database)
    db.upgrade_sync()
    token = hashlib.sha256(DB_KEY.encode()).hexdigest()
    now = time.time()

    def insert(conn: Any) -> None:
        if store.get_key(conn, token) is None:
            store.insert_key(conn, KeyRecord(token=token, key_alias="bench-db", max_budget=1e6,
                                             tpm_limit=10**9, created_at=now, updated_at=now))  # fmt: skip

    db.transaction_sync(insert, write=True)
    db.close_sync()


async def setups(database: str | None, key: str, sessions: int) -> dict[str, float]:
    config = parse_text(config_text(database), path="<bench>", env={}).config
    latencies: list[float] = []
    async with open_gateway(config) as gw:
        url = f"{gw.ws_url}/v1/realtime?model=m"
        headers = [(b"Authorization", f"Bearer {key}".encode())]
        for _ in range(20):  # warm-up (and the first database lookup of the key)
            async with open_websocket_url(url, extra_headers=headers) as ws:
                await ws.get_message()
        started = time.perf_counter()
        for _ in range(sessions):
            t0 = time.perf_counter()
            async with open_websocket_url(url, extra_headers=headers) as ws:
                await ws.get_message()  # session.created
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "setups_per_s": sessions / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def driver_check(postgres: str) -> dict[str, str]:
    """psycopg async under trio, and a SELECT 1 direct vs through a worker thread."""
    import psycopg

    async def async_under_trio() -> str:
        try:
            conn = await psycopg.AsyncConnection.connect(postgres)
            await conn.close()
            return "works"
        except Exception as exc:
            return f"fails: {type(exc).__name__}: {str(exc)[:80]}"

    outcome = trio.run(async_under_trio)
    conn = psycopg.connect(postgres, autocommit=True)
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        conn.execute("SELECT 1").fetchone()
    direct = (time.perf_counter() - t0) / n * 1e6

    async def threaded() -> float:
        t1 = time.perf_counter()
        for _ in range(n):
            await trio.to_thread.run_sync(lambda: conn.execute("SELECT 1").fetchone())
        return (time.perf_counter() - t1) / n * 1e6

    in_thread = trio.run(threaded)
    conn.close()
    return {"psycopg AsyncConnection under trio": outcome,
            "SELECT 1 direct (us)": f"{direct:.0f}",
            "SELECT 1 via trio.to_thread (us)": f"{in_thread:.0f}"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--postgres", default=os.environ.get("RTGATE_BENCH_POSTGRES"))
    args = parser.parse_args()
    os.environ.setdefault("RTGATE_STATE_DIR", tempfile.mkdtemp(prefix="rtgate-bench-"))
    runs: list[tuple[str, str | None, str]] = [("config key, SQLite default", None, FILE_KEY),
                                               ("database key, SQLite", None, DB_KEY)]  # fmt: skip
    if args.postgres:
        runs.append(("database key, PostgreSQL", args.postgres, DB_KEY))
    print("| setup | setups/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, database, key in runs:
        if key == DB_KEY:
            add_db_key(database)
        result = trio.run(setups, database, key, args.sessions)
        print(f"| {name} | {result['setups_per_s']:.0f} | {result['p50_ms']:.2f} | "
              f"{result['p99_ms']:.2f} |")  # fmt: skip
    if args.postgres:
        for what, value in driver_check(args.postgres).items():
            print(f"{what}: {value}")


if __name__ == "__main__":
    main()
