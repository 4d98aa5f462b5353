"""LiteLLM's key and spend API on the control plane: same paths, same request and answer shapes.

Routes (all need the master key)::

    POST /key/generate   {models, key_alias, max_budget, budget_duration, duration, max_parallel_requests,
                          rpm_limit, tpm_limit, metadata, user_id, team_id, key, blocked, spend} -> {key, ...}
    POST /key/update     {key, <the same fields>} -> the key's info and "key"
    POST /key/delete     {keys: [...], key_aliases: [...]} -> {deleted_keys: [...]}
    GET  /key/info?key=  -> {key, info: {...}}
    GET  /key/list       ?page&size&key_alias&user_id&team_id&key_hash&return_full_object
                         -> {keys, total_count, current_page, total_pages}
    POST /key/block, /key/unblock  {key} -> the key's row
    GET  /spend/logs     ?api_key&key_alias&model_group&user_id&team_id&request_id&session_id
                          &start_date&end_date&limit -> one row per priced response
    GET  /global/spend/report  ?start_date&end_date&api_key&key_alias&model_group
                         -> totals by key, model group, key and group, team, user

A key is named by itself (``sk-...``) or by its sha256 hex, as LiteLLM allows. Every
malformed request is a 400 naming the field in LiteLLM's error shape
(``{"error": {"message", "type", "param", "code"}}``). Changes apply on this host at
once and on every other host at its next key refresh (``key_refresh_seconds``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import attrs
import orjson

from rtgate.governance import store
from rtgate.governance.db import Conn
from rtgate.governance.service import Governance
from rtgate.spend.keys import KeyRecord, abbreviate, duration_seconds

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

MAX_BODY = 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

ROUTES: Mapping[str, str] = {
    "/key/generate": "POST", "/key/update": "POST", "/key/delete": "POST",
    "/key/info": "GET", "/key/list": "GET", "/key/block": "POST", "/key/unblock": "POST",
    "/spend/logs": "GET", "/global/spend/report": "GET",
}  # fmt: skip


class ApiError(Exception):
    """An answer other than 200, in LiteLLM's ProxyException shape."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 error_type: str = "bad_request_error") -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.error_type = error_type

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": str(self.status)}}  # fmt: skip


def token_of(key: str) -> str:
    """The stored name of a key given as itself or as its sha256 hex."""
    return key if _HEX64.match(key) else hashlib.sha256(key.encode()).hexdigest()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def key_info(record: KeyRecord) -> dict[str, object]:
    """A key as LiteLLM's ``LiteLLM_VerificationToken`` (without the token itself)."""
    return {
        "key_name": record.key_name, "key_alias": record.key_alias, "spend": record.spend,
        "max_budget": record.max_budget, "expires": iso(record.expires),
        "models": list(record.models), "aliases": {}, "config": {}, "user_id": record.user_id,
        "team_id": record.team_id, "max_parallel_requests": record.max_parallel_requests,
        "metadata": dict(record.metadata), "tpm_limit": record.tpm_limit,
        "rpm_limit": record.rpm_limit, "budget_duration": record.budget_duration,
        "budget_reset_at": iso(record.budget_reset_at), "allowed_cache_controls": [],
        "permissions": {}, "model_spend": {}, "model_max_budget": {},
        "blocked": record.blocked, "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }  # fmt: skip


def key_row(record: KeyRecord) -> dict[str, object]:
    return {"token": record.token, **key_info(record)}


# -- request bodies -----------------------------------------------------------------


def _string(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string", name)
    return value


def _number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number", name)
    if value < 0:
        raise ApiError(400, f"{name} must be >= 0", name)
    return float(value)


def _integer(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer", name)
    if value < 0:
        raise ApiError(400, f"{name} must be >= 0", name)
    return value


def _duration(body: Mapping[str, Any], name: str) -> tuple[str, float] | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        return str(value), duration_seconds(str(value))
    except ValueError:
        raise ApiError(
            400, f"{name} must be a duration like 30s, 30m, 1h, 30d, 1mo", name
        ) from None


def _models(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = body.get("models")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        raise ApiError(400, "models must be a list of model group names", "models")
    return tuple(value)


def _metadata(body: Mapping[str, Any]) -> dict[str, object] | None:
    value = body.get("metadata")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, "metadata must be an object", "metadata")
    return value


def _key_list(body: Mapping[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(k, str) and k for k in value):
        raise ApiError(400, f"{name} must be a list of strings", name)
    return value


def key_changes(body: Mapping[str, Any], now: float) -> dict[str, object]:
    """The ``KeyRecord`` fields a generate or update body sets (nulls and absent fields: none)."""
    changes: dict[str, object] = {}
    for name in ("key_alias", "user_id", "team_id"):
        if (text := _string(body, name)) is not None:
            changes[name] = text
    for name in ("max_budget", "spend"):
        if (number := _number(body, name)) is not None:
            changes[name] = number
    for name, field in (("max_parallel_requests", "max_parallel_requests"),
                        ("rpm_limit", "rpm_limit"), ("tpm_limit", "tpm_limit")):  # fmt: skip
        if (count := _integer(body, name)) is not None:
            changes[field] = count
    if (models := _models(body)) is not None:
        changes["models"] = models
    if (metadata := _metadata(body)) is not None:
        changes["metadata"] = metadata
    if (budget := _duration(body, "budget_duration")) is not None:
        changes["budget_duration"] = budget[0]
        changes["budget_reset_at"] = now + budget[1]
    if (expiry := _duration(body, "duration")) is not None:
        changes["expires"] = now + expiry[1]
    blocked = body.get("blocked")
    if blocked is not None:
        if not isinstance(blocked, bool):
            raise ApiError(400, "blocked must be true or false", "blocked")
        changes["blocked"] = blocked
    return changes


# -- the handlers ---------------------------------------------------------------------


class KeyApi:
    """The routes above over one :class:`Governance`."""

    def __init__(self, governance: Governance) -> None:
        self.gov = governance

    async def handle(self, method: str, path: str, query: str, body: bytes) -> tuple[int, object]:
        expected = ROUTES[path]
        if method != expected and not (expected == "GET" and method == "HEAD"):
            raise ApiError(405, f"{path} takes {expected}", error_type="method_not_allowed")
        params = dict(parse_qsl(query))
        if expected == "GET":
            handler: Callable[[Mapping[str, str]], Awaitable[object]] = {
                "/key/info": self.info, "/key/list": self.list_keys,
                "/spend/logs": self.spend_logs, "/global/spend/report": self.report,
            }[path]  # fmt: skip
            return 200, await handler(params)
        data = _json_body(body)
        post: Callable[[Mapping[str, Any]], Awaitable[object]] = {
            "/key/generate": self.generate, "/key/update": self.update,
            "/key/delete": self.delete, "/key/block": self.block_key,
            "/key/unblock": self.unblock_key,
        }[path]  # fmt: skip
        return 200, await post(data)

    async def _db(self, fn: Callable[[Conn], Any], write: bool = False) -> Any:
        try:
            return await self.gov.query(fn, write=write)
        except ApiError:
            raise
        except Exception as exc:
            self.gov.note_failure(exc)
            raise ApiError(503, f"database unreachable: {self.gov.database_error}",
                           error_type="internal_server_error") from None  # fmt: skip

    async def generate(self, body: Mapping[str, Any]) -> dict[str, object]:
        now = time.time()
        changes = key_changes(body, now)
        custom = _string(body, "key")
        if custom is not None and not custom.startswith("sk-"):
            raise ApiError(400, "key must start with 'sk-'", "key")
        key = custom or "sk-" + secrets.token_urlsafe(16)
        token = hashlib.sha256(key.encode()).hexdigest()
        record = KeyRecord(token=token, key_name=abbreviate(key), created_at=now, updated_at=now,
                           **changes)  # type: ignore[arg-type]  # fmt: skip

        def insert(conn: Conn) -> None:
            if record.key_alias is not None and store.key_by_alias(conn, record.key_alias):
                raise ApiError(400, f"a key with key_alias {record.key_alias!r} exists; "
                               "unique key aliases are required", "key_alias")  # fmt: skip
            if store.get_key(conn, token) is not None:
                raise ApiError(400, "that key exists already", "key")
            store.insert_key(conn, record)

        await self._db(insert, write=True)
        self.gov.keys[token] = record
        return {"key": key, "token_id": token, **key_info(record)}

    async def update(self, body: Mapping[str, Any]) -> dict[str, object]:
        key = _required_key(body)
        now = time.time()
        changes = key_changes(body, now)
        token = token_of(key)

        def apply(conn: Conn) -> KeyRecord:
            record = store.get_key(conn, token)
            if record is None:
                raise ApiError(404, f"key not found: {_safe(key)}", "key", "not_found_error")
            alias = changes.get("key_alias")
            if alias is not None and alias != record.key_alias:
                other = store.key_by_alias(conn, str(alias))
                if other is not None:
                    raise ApiError(400, f"a key with key_alias {alias!r} exists", "key_alias")
            updated = attrs.evolve(record, updated_at=now, **changes)  # type: ignore[arg-type]
            store.replace_key(conn, updated)
            return updated

        record = await self._db(apply, write=True)
        self.gov.keys[token] = record
        return {"key": key, **key_info(record)}

    async def delete(self, body: Mapping[str, Any]) -> dict[str, object]:
        keys = _key_list(body, "keys")
        aliases = _key_list(body, "key_aliases")
        if not keys and not aliases:
            raise ApiError(400, "keys (or key_aliases) must list the keys to delete", "keys")

        def remove(conn: Conn) -> tuple[list[str], list[str]]:
            tokens = [token_of(k) for k in keys]
            for alias in aliases:
                record = store.key_by_alias(conn, alias)
                if record is not None:
                    tokens.append(record.token)
            found = store.delete_keys(conn, tokens)
            if not found:
                raise ApiError(404, "no keys found", "keys", "not_found_error")
            return tokens, found

        tokens, found = await self._db(remove, write=True)
        for token in found:
            self.gov.keys.pop(token, None)
        deleted = [k for k in keys if token_of(k) in found] + [
            a for a in aliases if any(t in found for t in tokens)
        ]
        failed = [k for k in keys if token_of(k) not in found]
        return {"deleted_keys": deleted, "failed_tokens": failed}

    async def block_key(self, body: Mapping[str, Any]) -> dict[str, object]:
        return await self._set_blocked(body, blocked=True)

    async def unblock_key(self, body: Mapping[str, Any]) -> dict[str, object]:
        return await self._set_blocked(body, blocked=False)

    async def _set_blocked(self, body: Mapping[str, Any], *, blocked: bool) -> dict[str, object]:
        key = _required_key(body)
        token = token_of(key)
        now = time.time()

        def apply(conn: Conn) -> KeyRecord:
            record = store.get_key(conn, token)
            if record is None:
                raise ApiError(404, f"Key {_safe(key)} not found", "key", "not_found_error")
            updated = attrs.evolve(record, blocked=blocked, updated_at=now)
            store.replace_key(conn, updated)
            return updated

        record = await self._db(apply, write=True)
        self.gov.keys[token] = record
        return key_row(record)

    async def info(self, params: Mapping[str, str]) -> dict[str, object]:
        key = params.get("key")
        if not key:
            raise ApiError(400, "key is required (?key=sk-... or its sha256 hex)", "key")
        record = await self._db(partial(store.get_key, token=token_of(key)))
        if record is None:
            raise ApiError(404, f"key not found: {_safe(key)}", "key", "not_found_error")
        return {"key": key, "info": key_info(record)}

    async def list_keys(self, params: Mapping[str, str]) -> dict[str, object]:
        page = _query_int(params, "page", 1, 1, 10**9)
        size = _query_int(params, "size", 10, 1, 100)
        filters = {column: params[name] for name, column in (
            ("key_alias", "key_alias"), ("user_id", "user_id"), ("team_id", "team_id"),
            ("key_hash", "token")) if params.get(name)}  # fmt: skip
        full = params.get("return_full_object", "false").lower() == "true"
        records, total = await self._db(
            partial(store.list_keys, filters=filters, page=page, size=size)
        )
        return {
            "keys": [key_row(r) if full else r.token for r in records],
            "total_count": total, "current_page": page,
            "total_pages": -(-total // size) if total else 0,
        }  # fmt: skip

    async def spend_logs(self, params: Mapping[str, str]) -> list[dict[str, object]]:
        start, end = _time_range(params)
        filters = _spend_filters(params)
        limit = _query_int(params, "limit", 1000, 1, 100_000)
        rows = await self._db(
            partial(store.spend_logs, filters=filters, start=start, end=end, limit=limit)
        )
        return [_spend_row(row) for row in rows]

    async def report(self, params: Mapping[str, str]) -> dict[str, object]:
        start, end = _time_range(params)
        filters = _spend_filters(params)
        report = await self._db(partial(store.spend_report, start=start, end=end, filters=filters))
        total = sum(row["spend"] for row in report["by_model_group"])
        return {"start_date": iso(start), "end_date": iso(end), "total_spend": total, **report}


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise ApiError(400, "the request needs a JSON object body", "body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", "body")
    return data


def _required_key(body: Mapping[str, Any]) -> str:
    key = _string(body, "key")
    if key is None:
        raise ApiError(400, "key is required", "key")
    return key


def _safe(key: str) -> str:
    """A key as it may appear in an answer: a hash as given, a key abbreviated."""
    return key if _HEX64.match(key) else abbreviate(key)


def _query_int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}", name)
    return value


def parse_time(value: str, name: str, *, end: bool = False) -> float:
    """``YYYY-MM-DD`` (an end date includes its day), ISO 8601, or UNIX seconds; UTC."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        if len(value) == 10:
            day = dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            return (day + dt.timedelta(days=1 if end else 0)).timestamp()
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be YYYY-MM-DD, an ISO 8601 time or UNIX seconds",
                       name) from None  # fmt: skip
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _time_range(params: Mapping[str, str]) -> tuple[float | None, float | None]:
    start = parse_time(params["start_date"], "start_date") if params.get("start_date") else None
    end = (parse_time(params["end_date"], "end_date", end=True)
           if params.get("end_date") else None)  # fmt: skip
    if start is not None and end is not None and end < start:
        raise ApiError(400, "end_date is before start_date", "end_date")
    return start, end


def _spend_filters(params: Mapping[str, str]) -> dict[str, str]:
    filters = {column: params[name] for name, column in (
        ("key_alias", "key_alias"), ("model_group", "model_group"), ("model", "model_group"),
        ("user_id", "user_id"), ("team_id", "team_id"), ("request_id", "request_id"),
        ("session_id", "session_id")) if params.get(name)}  # fmt: skip
    if params.get("api_key"):
        filters["api_key"] = token_of(params["api_key"])
    return filters


def _spend_row(row: Mapping[str, Any]) -> dict[str, object]:
    """A spend row with LiteLLM's ``LiteLLM_SpendLogs`` names (plus rtgate's session fields)."""
    return {
        "request_id": row["request_id"], "call_type": "_arealtime", "api_key": row["api_key"],
        "spend": float(row["spend"]), "total_tokens": row["total_tokens"],
        "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
        "startTime": iso(row["start_time"]), "endTime": iso(row["start_time"]),
        "model": row["model"], "model_group": row["model_group"], "model_id": row["deployment"],
        "custom_llm_provider": row["provider"], "user": row["user_id"],
        "team_id": row["team_id"], "session_id": row["session_id"],
        "response_id": row["response_id"], "usage": row["usage"],
        "metadata": {"user_api_key_alias": row["key_alias"], "user_api_key": row["api_key"]},
    }  # fmt: skip


async def read_body(receive: Receive) -> bytes:
    """The request body, at most :data:`MAX_BODY` bytes (413 beyond)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"the body is larger than {MAX_BODY} bytes", "body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def serve(
    api: KeyApi, scope: Mapping[str, Any], receive: Receive, send: Send, authorised: bool
) -> None:
    """Answer one request to a path in :data:`ROUTES`."""
    path = scope["path"].rstrip("/")
    try:
        if not authorised:
            raise ApiError(401, "Authentication Error, the master key is required",
                           error_type="auth_error")  # fmt: skip
        body = await read_body(receive) if scope["method"] == "POST" else b""
        status, answer = await api.handle(scope["method"], path, scope.get("query_string",
                                          b"").decode("latin-1"), body)  # fmt: skip
    except ApiError as exc:
        status, answer = exc.status, exc.body()
    payload = orjson.dumps(answer)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store")]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})
