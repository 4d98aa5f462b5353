"""The statements on a real SQLite file: each response charged once, budgets reset on schedule
(injected time), migrations recorded and idempotent."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from rtgate.governance import store
from rtgate.governance.db import Database
from rtgate.governance.schema import LATEST
from rtgate.spend.keys import KeyRecord
from rtgate.spend.prices import Prices
from rtgate.spend.records import Who, price_response

WHO = Who(api_key="a" * 64, key_alias="k", user_id=None, team_id="t", model_group="g",
          model="gpt-realtime", deployment="d", provider="openai", session_id="sess_1")  # fmt: skip


def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    assert db.upgrade_sync() == [LATEST]
    assert db.upgrade_sync() == []  # applied once
    assert db.version_sync() == LATEST
    return db


def test_each_response_is_charged_once(tmp_path: Path) -> None:
    db = _db(tmp_path)
    db.transaction_sync(partial(store.insert_key, record=KeyRecord(token=WHO.api_key)), write=True)
    record = price_response(WHO, "resp_1", {"input_tokens": 100, "output_tokens": 10},
                            Prices(input_text=1e-6, output_text=2e-6), now=1.0)  # fmt: skip
    first = db.transaction_sync(partial(store.write_spend, records=[record]), write=True)
    # A retry (the commit's answer was lost), a replayed spill file, a second host: no charge.
    again = db.transaction_sync(partial(store.write_spend, records=[record, record]), write=True)
    assert first == [record] and again == []
    key = db.transaction_sync(partial(store.get_key, token=WHO.api_key))
    assert key is not None and abs(key.spend - (100e-6 + 20e-6)) < 1e-15
    logs = db.transaction_sync(partial(store.spend_logs, filters={}, start=None, end=None,
                                       limit=10))  # fmt: skip
    assert [row["request_id"] for row in logs] == ["sess_1:resp_1"]


def test_budget_resets_on_schedule(tmp_path: Path) -> None:
    db = _db(tmp_path)
    day = 86400.0
    key = KeyRecord(token=WHO.api_key, spend=5.0, max_budget=10.0, budget_duration="1d",
                    budget_reset_at=1000.0 + day)  # fmt: skip
    db.transaction_sync(partial(store.insert_key, record=key), write=True)
    assert db.transaction_sync(partial(store.reset_due_budgets, now=1000.0), write=True) == 0
    # Three and a half days later: reset once, next reset on the original schedule.
    now = 1000.0 + 3.5 * day
    assert db.transaction_sync(partial(store.reset_due_budgets, now=now), write=True) == 1
    after = db.transaction_sync(partial(store.get_key, token=WHO.api_key))
    assert after is not None and after.spend == 0.0
    assert after.budget_reset_at == 1000.0 + 4 * day
    assert db.transaction_sync(partial(store.reset_due_budgets, now=now), write=True) == 0
