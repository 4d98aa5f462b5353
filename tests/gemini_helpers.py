"""Shared helpers for the Gemini tests: a Gemini transcript, and Gemini's side checked."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from google.genai import types

from rtgate.translate.gemini.translator import GeminiTranslator
from tests.transcript import Transcript

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


def gemini(translator: GeminiTranslator | None = None, now: float = 100.0) -> Transcript:
    """A transcript of a Gemini session: Gemini's frames binary, every frame to it checked."""
    return Transcript(
        translator or GeminiTranslator(model_path=MODEL, model_group="gem", session_id="sess_1"),
        now=now,
        check_upstream=validate_upstream,
        upstream_binary=True,
    )


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
