"""Helpers of the governance tests: the key API over HTTP, a priced config, an SDK session."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import trio

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY

# Prices the test deployment is given (dollars per token), so expected costs are exact.
PRICES = {
    "input_cost_per_token": 1e-6,
    "input_cost_per_audio_token": 10e-6,
    "cache_read_input_token_cost": 0.1e-6,
    "output_cost_per_token": 2e-6,
    "output_cost_per_audio_token": 20e-6,
}


def priced_config(base_url: str, *, database: str = "", extra: str = "") -> str:
    """One OpenAI deployment with :data:`PRICES` as ``model_info`` overrides."""
    prices = "".join(f"\n      {k}: {v!r}" for k, v in PRICES.items())
    db = f"\n  database_url: {database}" if database else ""
    return f"""
model_list:
  - model_name: gpt-realtime
    litellm_params:
      model: openai/gpt-realtime
      api_key: {UPSTREAM_KEY}
      api_base: {base_url}
    model_info:
      mode: realtime{prices}
general_settings:
  master_key: {CLIENT_KEY}{db}
rtgate:
  limits:
    connect_timeout: 2
    ping_interval: 0
  governance:
    key_refresh_seconds: 0.5
    spend_flush_interval: 0.01
{extra}
"""


def expected_cost(usage: dict[str, Any]) -> float:
    """The bill of one GA usage object at :data:`PRICES`, written out by hand."""
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    cached = (inp.get("cached_tokens_details") or {}).get("text_tokens", 0)
    return (
        (inp.get("text_tokens", 0) - cached) * PRICES["input_cost_per_token"]
        + cached * PRICES["cache_read_input_token_cost"]
        + inp.get("audio_tokens", 0) * PRICES["input_cost_per_audio_token"]
        + out.get("text_tokens", 0) * PRICES["output_cost_per_token"]
        + out.get("audio_tokens", 0) * PRICES["output_cost_per_audio_token"]
    )


def _http(method: str, url: str, body: object | None, key: str) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def api(
    http_url: str, method: str, path: str, body: object | None = None, key: str = CLIENT_KEY
) -> tuple[int, Any]:
    """One key or spend API call (``urllib`` in a thread: a client independent of rtgate)."""
    return await trio.to_thread.run_sync(_http, method, http_url + path, body, key)


def sdk_session(
    url: str, key: str, *, responses: int = 1, expect_close: bool = False
) -> dict[str, Any]:
    """Run ``responses`` text responses with the openai SDK; the usages and the ending.

    Returns ``{"usages": [...], "error": error event or None, "close_code": int or None}``.
    """
    from openai import AsyncOpenAI

    async def session() -> dict[str, Any]:
        client = AsyncOpenAI(api_key=key, websocket_base_url=url, max_retries=0)
        usages: list[dict[str, Any]] = []
        error = None
        close_code = None
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            for _ in range(responses):
                await conn.conversation.item.create(
                    item={"type": "message", "role": "user",
                          "content": [{"type": "input_text", "text": "hello there"}]}
                )  # fmt: skip
                await conn.response.create()
                async for event in conn:
                    if event.type == "response.done":
                        usages.append(event.response.usage.model_dump(exclude_none=True))
                        break
            if not expect_close:
                return {"usages": usages, "error": None, "close_code": None}
            try:
                async for event in conn:
                    if event.type == "error":
                        error = event.error.model_dump()
            except Exception as exc:  # the server closed: the SDK raises on the close
                rcvd = getattr(exc, "rcvd", None)
                close_code = rcvd.code if rcvd is not None else None
        return {"usages": usages, "error": error, "close_code": close_code}

    return asyncio.run(asyncio.wait_for(session(), 20))


def sdk_session_open(url: str, key: str) -> dict[str, Any]:
    """Open and close one session; the error of a refused handshake (status, body)."""
    import websockets.exceptions
    from websockets.sync.client import connect

    try:
        with connect(f"{url}/realtime?model=gpt-realtime",
                     additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=10):  # fmt: skip
            return {"status": 101}
    except websockets.exceptions.InvalidStatus as exc:
        return {"status": exc.response.status_code, "body": json.loads(exc.response.body or b"{}")}


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Poll an async predicate until it is true (bounded)."""
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)
