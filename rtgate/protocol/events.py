"""Cheap facts about OpenAI Realtime events without decoding them.

The relay needs an event's ``type`` for logging filters and protocol bridges,
but most frames are audio it must not decode. OpenAI, and the SDKs' own
serialisers, put ``type`` first, so a prefix check answers almost always; any
other layout falls back to a real JSON parse.
"""

from __future__ import annotations

import orjson

_PREFIXES = (b'{"type":"', b'{"type": "')


def sniff_type(frame: bytes) -> str | None:
    """The top-level ``type`` of a JSON event, or None if it has none or is not JSON."""
    for prefix in _PREFIXES:
        if frame.startswith(prefix):
            start = len(prefix)
            end = frame.find(b'"', start)
            if end > start and frame.find(b"\\", start, end) < 0:
                return frame[start:end].decode("ascii", "replace")
    event = parse_event(frame)
    kind = event.get("type") if event is not None else None
    return kind if isinstance(kind, str) else None


def parse_event(frame: bytes) -> dict[str, object] | None:
    """Decode a JSON object event, or None if the frame is not one."""
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None
