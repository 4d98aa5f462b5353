"""The process's governance: database keys, admission checks, spend accounting and writing.

One :class:`Governance` per gateway process. The relay reports each finished
response to its session's :class:`SessionAccount` (a plain call: price it, append
it to an in-memory buffer, answer whether the key is now over its budget); the
writer task drains that buffer into the database in batches, so the relay never
waits on the database. The refresh task reloads every key every
``key_refresh_seconds``, so a key generated, updated, blocked or deleted on any
host is seen here within that time (a key never seen before is looked up at once).

Database down: keys already known keep working from memory; spend stays buffered
(beyond ``spend_buffer_records`` it is spilled to a file in the state directory, so
memory stays bounded and nothing is lost) and is written when the database is back,
exactly once per response (the writes are idempotent per ``session:response`` id).
New sessions of budgeted keys are refused with 503 meanwhile, unless
``general_settings.allow_requests_on_db_unavailable`` is true (LiteLLM's switch).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import orjson
import trio

from rtgate.config.model import Deployment, GatewayConfig, GovernanceSettings
from rtgate.errors import scrub
from rtgate.governance import store
from rtgate.governance.db import Conn, Database, state_dir
from rtgate.spend import keys as key_rules
from rtgate.spend.keys import KeyRecord, Standing
from rtgate.spend.prices import OVERRIDE_FIELDS, Prices, lookup, with_overrides
from rtgate.spend.records import SpendRecord, Who, price_response, price_seconds

log = logging.getLogger("rtgate.governance")

T = TypeVar("T")

_NEGATIVE_CACHE_MAX = 10_000
"""Unknown keys remembered (so a key flood does not become a database flood)."""
_BATCH = 500
_RETRY_MAX = 5.0
_RECENT_COSTS = 16
"""Response costs a session keeps for its turn spans (each is taken within the same batch)."""
TODAY_REFRESH_SECONDS = 5.0
"""How long the status page's spend-per-key-today sum is reused before the database is asked
again (a page polls every 2 s; several open pages share one query)."""
_DAY = 86400.0


@attrs.define
class SpendCounters:
    """Plain numbers the Prometheus collector reads (labels: key alias, model group)."""

    spend_usd: dict[tuple[str, str], float] = attrs.field(factory=dict)
    tokens: dict[tuple[str, str, str, str], int] = attrs.field(factory=dict)
    """By (key alias, model group, direction, modality)."""
    deployment_spend_usd: dict[tuple[str, str], float] = attrs.field(factory=dict)
    """By (model group, deployment): kept apart from the key series, so their label sets do
    not multiply (keys x deployments)."""
    deployment_tokens: dict[tuple[str, str, str, str], int] = attrs.field(factory=dict)
    """By (model group, deployment, direction, modality)."""
    records_written: int = 0
    records_duplicate: int = 0
    records_spilled: int = 0


@attrs.define
class KeySpend:
    """One key's spend since UTC midnight (the status page's row)."""

    key_alias: str
    """The key's label: its alias, ``key-`` + 8 hex of its hash, or ``""`` for no key."""
    spend_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    responses: int = 0

    def add(self, spend: float, input_tokens: int, output_tokens: int, responses: int) -> None:
        self.spend_usd += spend
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.responses += responses


@attrs.frozen
class SpendToday:
    """Spend per key since ``since`` (UTC midnight), highest first."""

    since: float
    keys: list[KeySpend]
    from_database: bool
    """False when the database could not be asked (then: its last answer today, if any, plus
    this process's unwritten records)."""


def utc_midnight(now: float) -> float:
    """The UNIX time of the UTC midnight that began the day of ``now``."""
    return now - now % _DAY


def _spend_since(conn: Conn, since: float) -> list[dict[str, Any]]:
    return conn.rows(
        "SELECT key_alias, SUM(spend) AS spend, SUM(prompt_tokens) AS input_tokens, "
        "SUM(completion_tokens) AS output_tokens, COUNT(*) AS responses "
        "FROM rtgate_spend_logs WHERE start_time >= ? GROUP BY key_alias",
        (since,),
    )


@attrs.frozen
class Ending:
    """Why the relay must end a session after the current response."""

    close_code: int
    message: str
    error_type: str
    error_code: str


BUDGET_CLOSE_CODE = 1008
"""Close code of a session ended for its key's budget or tpm_limit (policy violation)."""


def deployment_prices(deployment: Deployment) -> Prices | None:
    """The shipped prices of a deployment's model with its overrides: LiteLLM's price fields
    in ``litellm_params`` or ``model_info`` (``model_info`` wins where both set one)."""
    info = {**{k: v for k, v in deployment.params.items() if k in OVERRIDE_FIELDS},
            **deployment.model_info}  # fmt: skip
    base_model = info.get("base_model")
    base = lookup(deployment.provider, deployment.model, str(base_model) if base_model else None)
    return with_overrides(base, info)


class Governance:
    """See the module docstring."""

    def __init__(self, config: GatewayConfig) -> None:
        url = config.database_url.value if config.database_url is not None else None
        self.db = Database(url)
        self.settings: GovernanceSettings = config.governance
        self.allow_when_down = config.allow_requests_on_db_unavailable
        self.secrets = config.secret_values()
        self.keys: dict[str, KeyRecord] = {}
        self.counters = SpendCounters()
        self.database_up = False
        self.database_error: str | None = "not connected yet"
        self._ready = False
        self._ready_lock = trio.Lock()
        self._unknown: dict[str, float] = {}
        self._tokens_db: dict[str, int] = {}
        self._tokens_local: dict[str, int] = {}
        self._pending: dict[str, float] = {}
        self._buffer: deque[SpendRecord] = deque()
        self._wake = trio.Event()
        self._prices = {d.id: deployment_prices(d) for d in config.deployments}
        self._spill = Path(self.settings.spill_path or state_dir() / "spend-spill.jsonl")
        self._started = False
        self._tried = False
        self._writing: list[SpendRecord] = []
        """The batch the writer is writing (out of the buffer until it is written or back)."""
        self._today: tuple[float, float, list[dict[str, Any]]] | None = None
        """(UTC midnight, when asked, rows) of the last spend-today query."""
        self._today_lock = trio.Lock()

    def reconfigure(self, config: GatewayConfig) -> None:
        """A reload: new prices, settings and policy (the database URL needs a restart)."""
        new_url = config.database_url.value if config.database_url is not None else None
        if new_url != self.db.url:
            log.warning("reload: a database_url change needs a restart; still using %s",
                        self.db.description)  # fmt: skip
        self.settings = config.governance
        self.allow_when_down = config.allow_requests_on_db_unavailable
        self.secrets = config.secret_values()
        self._prices = {d.id: deployment_prices(d) for d in config.deployments}

    # -- the tasks ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and migrate (retrying), refresh keys, write spend; until cancelled.

        The first refresh runs before the gateway serves: the database is open (or its
        outage logged) and the keys are known when the first client arrives."""
        self._started = True
        await self._refresh_once()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresher, self.settings.key_refresh_seconds)
            nursery.start_soon(self._writer)
            task_status.started()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Shutdown: write what is buffered (bounded by ``timeout``), spill the rest."""
        with trio.move_on_after(timeout):
            while self._buffer and self.database_up:
                if not await self._flush_once():
                    break
        if self._buffer:
            await trio.to_thread.run_sync(self._spill_sync, list(self._buffer))
            self._buffer.clear()
        await trio.to_thread.run_sync(self.db.close_sync)

    async def query(self, fn: Callable[[Conn], T], *, write: bool = False) -> T:
        """Run ``fn`` in a transaction on a worker thread, once the schema is migrated."""
        await self._ensure_ready()
        return await self.db.run(fn, write=write)

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            applied = await trio.to_thread.run_sync(self.db.upgrade_sync)
            if applied:
                log.info("database %s: applied migrations %s", self.db.description, applied)
            self._ready = True

    async def _refresher(self, first_wait: float) -> None:
        await trio.sleep(first_wait)
        while True:
            await self._refresh_once()
            await trio.sleep(self.settings.key_refresh_seconds)

    async def _refresh_once(self) -> bool:
        now = time.time()
        due = any(k.budget_reset_at is not None and k.budget_reset_at <= now
                  for k in self.keys.values())  # fmt: skip

        def load(conn: Conn) -> tuple[list[KeyRecord], dict[str, int]]:
            if due:
                store.reset_due_budgets(conn, now)
            return store.all_keys(conn), store.tokens_since(conn, now - 60.0)

        try:
            await self._ensure_ready()
            records, tokens = await self.db.run(load, write=due)
        except Exception as exc:
            self._down(exc)
            return False
        self._up()
        self.keys = {r.token: r for r in records}
        self._tokens_db = tokens
        self._tokens_local = {}
        self._unknown.clear()
        return True

    async def _writer(self) -> None:
        delay = 0.5
        while True:
            if not self._buffer:
                if self._spill.exists() and self.database_up:
                    await self._replay_spill()
                    continue
                await self._wake.wait()
                self._wake = trio.Event()
                await trio.sleep(self.settings.spend_flush_interval)  # gather a batch
            if len(self._buffer) > self.settings.spend_buffer_records:
                await self._spill_oldest()
            if await self._flush_once():
                delay = 0.5
            else:
                await trio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _flush_once(self) -> bool:
        batch = [self._buffer.popleft() for _ in range(min(_BATCH, len(self._buffer)))]
        if not batch:
            return True
        self._writing = batch
        try:
            await self._ensure_ready()
            new = await self.db.run(partial(store.write_spend, records=batch), write=True)
        except Exception as exc:
            self._buffer.extendleft(reversed(batch))
            self._down(exc)
            return False
        finally:
            self._writing = []
        self._up()
        self._written(batch, new)
        return True

    def _written(self, batch: list[SpendRecord], new: list[SpendRecord]) -> None:
        for record in batch:
            if record.api_key in self._pending:
                left = self._pending[record.api_key] - record.spend
                if left <= 1e-12:
                    del self._pending[record.api_key]
                else:
                    self._pending[record.api_key] = left
        for record in new:
            cached = self.keys.get(record.api_key)
            if cached is not None and record.spend:
                self.keys[record.api_key] = attrs.evolve(cached, spend=cached.spend + record.spend)
        self.counters.records_written += len(new)
        self.counters.records_duplicate += len(batch) - len(new)

    # -- spill file: bounded memory while the database is away ---------------------------

    async def _spill_oldest(self) -> None:
        count = len(self._buffer) - self.settings.spend_buffer_records // 2
        oldest = [self._buffer.popleft() for _ in range(count)]
        await trio.to_thread.run_sync(self._spill_sync, oldest)

    def _spill_sync(self, records: list[SpendRecord]) -> None:
        self._spill.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._spill.open("ab") as f:
            for record in records:
                f.write(orjson.dumps(record.to_json()) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.counters.records_spilled += len(records)
        log.warning("spend buffer full: %d records spilled to %s until the database is back",
                    len(records), self._spill)  # fmt: skip

    async def _replay_spill(self) -> None:
        """Write the spill file back in batches, then remove it (replaying twice is harmless)."""
        replaying = self._spill.with_suffix(".replaying")
        if not replaying.exists():
            await trio.to_thread.run_sync(self._spill.rename, replaying)
        lines = await trio.to_thread.run_sync(replaying.read_bytes)
        records = [SpendRecord.from_json(orjson.loads(line)) for line in lines.splitlines() if line]
        for start in range(0, len(records), _BATCH):
            batch = records[start : start + _BATCH]
            try:
                new = await self.db.run(partial(store.write_spend, records=batch), write=True)
            except Exception as exc:
                self._down(exc)
                return
            self._written(batch, new)
        await trio.to_thread.run_sync(replaying.unlink)
        log.info("wrote %d spilled spend records from %s", len(records), replaying)

    # -- state changes -----------------------------------------------------------------

    def note_failure(self, exc: BaseException) -> None:
        """A database call outside the tasks here failed (the key API)."""
        self._down(exc)

    def _down(self, exc: BaseException) -> None:
        message = scrub(f"{type(exc).__name__}: {exc}".strip(), self.secrets)[:300]
        if self.database_up or self.database_error != message:
            log.error(
                "database %s unreachable: %s; running sessions continue, %d spend records "
                "buffered (written when it is back)",
                self.db.description, message, len(self._buffer),
            )  # fmt: skip
        self.database_up = False
        self.database_error = message
        self._tried = True

    def _up(self) -> None:
        if not self.database_up:
            log.info("database %s is connected (%d spend records to write)",
                     self.db.description, len(self._buffer))  # fmt: skip
        self.database_up = True
        self.database_error = None
        self._tried = True

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def readiness(self) -> dict[str, Any]:
        """The ``database`` detail of ``/health/readiness``."""
        return {
            "url": self.db.description,
            "connected": self.database_up,
            "error": self.database_error,
            "buffered_spend_records": len(self._buffer),
            "spill_file": str(self._spill) if self._spill.exists() else None,
        }

    # -- the status page -----------------------------------------------------------------

    async def spend_today(self) -> SpendToday:
        """Spend, tokens and responses per key label since UTC midnight: every host's records
        in the database (asked at most once per :data:`TODAY_REFRESH_SECONDS`) plus this
        process's records not yet written. Never touched by a session."""
        since = utc_midnight(time.time())
        # Known down: the writer and the refresher notice its return; a page does not wait on it.
        from_database = self.database_up or not self._tried
        async with self._today_lock:  # pages polling at once share one query
            asked = trio.current_time()
            cached = self._today
            fresh = (
                cached is not None
                and cached[0] == since
                and asked - cached[1] < TODAY_REFRESH_SECONDS
            )
            if from_database and not fresh:
                try:
                    rows = await self.query(partial(_spend_since, since=since))
                except Exception as exc:
                    self._down(exc)
                    from_database = False
                else:
                    self._today = (since, asked, rows)
        cached = self._today
        by_label: dict[str, KeySpend] = {}
        if cached is not None and cached[0] == since:
            for row in cached[2]:
                label = row["key_alias"] or ""
                by_label.setdefault(label, KeySpend(label)).add(
                    float(row["spend"] or 0.0), int(row["input_tokens"] or 0),
                    int(row["output_tokens"] or 0), int(row["responses"] or 0),
                )  # fmt: skip
        # While the database answers, the batch being written is left out (it is in the next
        # answer; counting it could count it twice); while it does not, that batch fails back.
        unwritten = self._buffer if from_database else [*self._buffer, *self._writing]
        for record in unwritten:
            if record.start_time >= since:
                label = record.key_alias or ""
                by_label.setdefault(label, KeySpend(label)).add(
                    record.spend, record.prompt_tokens, record.completion_tokens, 1
                )
        keys = sorted(by_label.values(), key=lambda k: (-k.spend_usd, k.key_alias))
        return SpendToday(since=since, keys=keys, from_database=from_database)

    # -- at session setup --------------------------------------------------------------

    async def find_key(self, key: str) -> KeyRecord | None:
        """The database key ``key`` is, from memory or (first sight on this host) the database."""
        return await self.find_token(hashlib.sha256(key.encode()).hexdigest())

    async def find_token(self, token: str) -> KeyRecord | None:
        """The database key whose sha256 hex is ``token`` (a client secret carries only that)."""
        record = self.keys.get(token)
        if record is not None:
            return record
        now = trio.current_time()
        if self._unknown.get(token, 0.0) > now or (self._tried and not self.database_up):
            return None
        try:
            record = await self.query(partial(store.get_key, token=token))
        except Exception as exc:
            self._down(exc)
            return None
        if record is None:
            if len(self._unknown) >= _NEGATIVE_CACHE_MAX:
                self._unknown.clear()
            self._unknown[token] = now + self.settings.key_refresh_seconds
            return None
        self.keys[token] = record
        return record

    def check_usable(self, record: KeyRecord) -> None:
        key_rules.check_usable(record, time.time())

    def admit(self, token: str | None) -> None:
        """Budget, tpm and database-policy checks of a database key (raises to refuse)."""
        record = self.keys.get(token) if token else None
        if record is None:
            return
        key_rules.admit(
            record, self._standing(record.token), time.time(),
            database_up=self.database_up, allow_when_down=self.allow_when_down,
        )  # fmt: skip

    def _standing(self, token: str) -> Standing:
        return Standing(
            pending_spend=self._pending.get(token, 0.0),
            tokens_last_minute=self._tokens_db.get(token, 0) + self._tokens_local.get(token, 0),
        )

    def is_database_key(self, token: str | None) -> bool:
        return token is not None and token in self.keys

    def open_account(
        self, *, key_hash: str | None, key_alias: str | None, deployment: Deployment,
        model_group: str, session_id: str, transcription: bool = False,
    ) -> SessionAccount:  # fmt: skip
        team = user = None
        record = self.keys.get(key_hash) if key_hash else None
        if record is not None:
            team, user = record.team, record.user
        who = Who(
            api_key=key_hash or "", key_alias=key_alias, user_id=user, team_id=team,
            model_group=model_group, model=deployment.model, deployment=deployment.id,
            provider=deployment.provider, session_id=session_id,
        )  # fmt: skip
        return SessionAccount(self, who, self._prices.get(deployment.id), transcription)

    # -- at each response's end (called from the relay: never blocks) ------------------------

    def record(self, spend: SpendRecord) -> None:
        self._buffer.append(spend)
        self._wake.set()
        key = spend.api_key
        if spend.spend and key:
            self._pending[key] = self._pending.get(key, 0.0) + spend.spend
        if key:
            self._tokens_local[key] = self._tokens_local.get(key, 0) + spend.total_tokens
        self._count(spend)

    def _count(self, spend: SpendRecord) -> None:
        alias = spend.key_alias or ""
        group, deployment = spend.model_group, spend.deployment or ""
        label = (alias, group)
        counters = self.counters
        counters.spend_usd[label] = counters.spend_usd.get(label, 0.0) + spend.spend
        where = (group, deployment)
        by_deployment = counters.deployment_spend_usd
        by_deployment[where] = by_deployment.get(where, 0.0) + spend.spend
        c = spend.counts
        for direction, modality, n in (
            ("input", "text", c.text_in), ("input", "audio", c.audio_in),
            ("input", "image", c.image_in), ("output", "text", c.text_out),
            ("output", "audio", c.audio_out),
        ):  # fmt: skip
            if n:
                series = (alias, group, direction, modality)
                counters.tokens[series] = counters.tokens.get(series, 0) + n
                placed = (group, deployment, direction, modality)
                counters.deployment_tokens[placed] = counters.deployment_tokens.get(placed, 0) + n

    def budgets(self) -> list[tuple[str, float, float]]:
        """``(label, spend, max_budget)`` of each database key with a budget, as this process
        knows it: the period's spend at the last write or refresh plus its unwritten spend."""
        return [
            (r.label, r.spend + self._pending.get(r.token, 0.0), float(r.max_budget))
            for r in self.keys.values()
            if r.max_budget is not None
        ]

    def over_limit(self, token: str) -> Ending | None:
        """Whether a key's running sessions must end now (budget spent, tpm reached)."""
        record = self.keys.get(token)
        if record is None:
            return None
        standing = self._standing(token)
        try:
            key_rules.check_budget(record, standing, time.time())
        except Exception as exc:
            return Ending(BUDGET_CLOSE_CODE, str(exc), "budget_exceeded", "budget_exceeded")
        try:
            key_rules.check_tpm(record, standing)
        except Exception as exc:
            return Ending(BUDGET_CLOSE_CODE, str(exc), "rate_limit_exceeded", "tpm_limit_exceeded")
        return None


class SessionAccount:
    """One session's spend: each response priced and recorded once, the total for its record."""

    def __init__(
        self, governance: Governance, who: Who, prices: Prices | None, transcription: bool = False
    ) -> None:
        self.transcription = transcription
        """Transcripts are priced too (``?intent=transcription`` sessions)."""
        self.governance = governance
        self.who = who
        self.prices = prices
        self.cost = 0.0
        self._seen: set[str] = set()
        self._fallback_ids = 0
        self._recent: dict[str, float] = {}

    @property
    def priced(self) -> bool:
        """Whether the deployment has prices (else :attr:`cost` is 0 because it is unknown)."""
        return self.prices is not None

    def response_cost(self, response_id: str) -> float | None:
        """The cost of a response priced by :meth:`on_response`, once (for its turn span)."""
        return self._recent.pop(response_id, None)

    def on_response(self, response_id: str | None, usage: Mapping[str, int]) -> Ending | None:
        """A response ended with ``usage``; the ending if the key is now over a limit."""
        if response_id is None:
            self._fallback_ids += 1
            response_id = f"response-{self._fallback_ids}"
        if response_id in self._seen:
            return None  # the same response reported twice (a replay after a reconnect)
        self._seen.add(response_id)
        record = price_response(self.who, response_id, usage, self.prices, time.time())
        if self.prices is not None:
            if len(self._recent) >= _RECENT_COSTS:  # turns not traced: keep the newest only
                del self._recent[next(iter(self._recent))]
            self._recent[response_id] = record.spend
        return self._add(record)

    def on_transcription(self, item_id: str, usage: Mapping[str, Any]) -> Ending | None:
        """A transcription finished (``?intent=transcription``): tokens or seconds."""
        key = f"transcription-{item_id}"
        if key in self._seen:
            return None
        self._seen.add(key)
        if usage.get("type") == "duration":
            seconds = usage.get("seconds")
            if not isinstance(seconds, int | float) or seconds <= 0:
                return None
            record = price_seconds(self.who, float(seconds), self.prices, time.time(), key)
            return self._add(record) if record is not None else None
        flat = _flatten(usage)
        record = price_response(self.who, key, flat, self.prices, time.time())
        return self._add(record)

    def close(self, duration: float) -> float:
        """The session ended after ``duration`` seconds; its total cost."""
        record = price_seconds(self.who, duration, self.prices, time.time())
        if record is not None:
            self._add(record)
        return self.cost

    def _add(self, record: SpendRecord) -> Ending | None:
        self.cost += record.spend
        if not record.total_tokens and not record.spend:
            return None
        self.governance.record(record)
        return self.governance.over_limit(record.api_key) if record.api_key else None


def _flatten(usage: Mapping[str, Any], prefix: str = "") -> dict[str, int]:
    flat: dict[str, int] = {}
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            flat[prefix + key] = value
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
    return flat
