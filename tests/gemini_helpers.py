"""Shared helpers for the Gemini tests: drive a translator, check what it sends."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from google.genai import types

from rtgate.translate.base import Outbox
from rtgate.translate.gemini.translator import GeminiTranslator
from rtgate.wire import Binary

MODEL = "models/gemini-live-2.5-flash-preview"


def validate_upstream(frame: bytes) -> dict[str, Any]:
    """Parse a frame rtgate sent to Gemini and check it against google-genai's own types.

    ``LiveClientSetup`` in google-genai lacks ``realtimeInputConfig`` although the
    SDK's converter writes it into ``setup`` (``_live_converters``: path
    ``['setup', 'realtimeInputConfig']``), so that one field is checked against
    ``RealtimeInputConfig`` on its own.
    """
    message = orjson.loads(frame)
    assert isinstance(message, dict) and len(message) == 1, message
    checked = dict(message)
    if "setup" in checked:
        setup = dict(checked["setup"])
        realtime = setup.pop("realtimeInputConfig", None)
        if realtime is not None:
            types.RealtimeInputConfig.model_validate(realtime)
        checked["setup"] = setup
    types.LiveClientMessage.model_validate(checked)
    return message


class Driver:
    """A translator plus a clock; collects and validates every frame."""

    def __init__(self, translator: GeminiTranslator | None = None, now: float = 100.0) -> None:
        self.t = translator or GeminiTranslator(
            model_path=MODEL, model_group="gem", session_id="sess_1"
        )
        self.now = now
        self.client: list[dict[str, Any]] = []
        self.upstream: list[dict[str, Any]] = []
        self.outboxes: list[Outbox] = []

    def _collect(self, out: Outbox) -> Outbox:
        for frame in out.to_client:
            assert isinstance(frame, bytes)
            self.client.append(orjson.loads(frame))
        for frame in out.to_upstream:
            assert isinstance(frame, bytes)
            self.upstream.append(validate_upstream(frame))
        self.outboxes.append(out)
        return out

    def start(self) -> Outbox:
        out = Outbox()
        self.t.start(out, self.now)
        return self._collect(out)

    def send(self, event: dict[str, Any]) -> Outbox:
        out = Outbox()
        self.t.on_client(orjson.dumps(event), out, self.now)
        return self._collect(out)

    def recv(self, message: dict[str, Any], *, binary: bool = True) -> Outbox:
        out = Outbox()
        data = orjson.dumps(message)
        self.t.on_upstream(Binary(data) if binary else data, out, self.now)
        return self._collect(out)

    def tick(self, to: float) -> Outbox:
        self.now = to
        out = Outbox()
        self.t.on_timer(out, self.now)
        return self._collect(out)

    def reconnected(self) -> Outbox:
        out = Outbox()
        self.t.on_reconnected(out, self.now)
        return self._collect(out)

    def closed(self, code: int, reason: str) -> Outbox:
        out = Outbox()
        self.t.on_upstream_closed(code, reason, out, self.now)
        return self._collect(out)

    def types(self) -> list[str]:
        return [e["type"] for e in self.client]

    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        client, upstream = self.client, self.upstream
        self.client, self.upstream = [], []
        return client, upstream


def pcm(samples: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * samples


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def append(data: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": b64(data)}


def model_audio(data: bytes) -> dict[str, Any]:
    return {
        "serverContent": {
            "modelTurn": {
                "parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": b64(data)}}]
            }
        }
    }


def check_response_invariants(events: list[dict[str, Any]]) -> None:
    """Every response created once and done once; every delta between its added and done."""
    open_responses: set[str] = set()
    finished: set[str] = set()
    open_parts: set[tuple[str, str]] = set()
    open_items: set[str] = set()
    for event in events:
        kind = event["type"]
        rid = event.get("response_id")
        if kind == "response.created":
            rid = event["response"]["id"]
            assert rid not in open_responses and rid not in finished
            open_responses.add(rid)
        elif kind == "response.done":
            rid = event["response"]["id"]
            assert rid in open_responses, "response.done without response.created"
            open_responses.discard(rid)
            finished.add(rid)
            assert not any(r == rid for r, _ in open_parts)
        elif kind == "response.output_item.added":
            assert rid in open_responses
            open_items.add(event["item"]["id"])
        elif kind == "response.output_item.done":
            assert event["item"]["id"] in open_items
            open_items.discard(event["item"]["id"])
        elif kind == "response.content_part.added":
            assert rid in open_responses and event["item_id"] in open_items
            open_parts.add((rid, event["item_id"]))
        elif kind == "response.content_part.done":
            open_parts.discard((rid, event["item_id"]))
        elif (
            kind.startswith("response.")
            and kind.endswith((".delta", ".done"))
            and "item_id" in event
        ):
            assert rid in open_responses, kind
            assert event["item_id"] in open_items, kind
            if kind.startswith(("response.output_audio", "response.output_text")):
                assert (rid, event["item_id"]) in open_parts, kind
