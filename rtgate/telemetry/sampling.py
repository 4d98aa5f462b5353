"""What the event log keeps of a session, decided without I/O.

Owns the pure half of event logging: the event-type filter, session and
per-type sampling, redaction of audio, configured paths and secrets, and the
JSON-lines records that sinks receive. Nothing here imports trio; time comes in
as an argument.

Sampling is deterministic so a session is logged the same way on every replica
and on a replay of the same traffic: whether a session is logged depends only
on a hash of its id, and whether the n-th event of a sampled type is kept
depends only on the session id, the type and n.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from rtgate.errors import scrub
from rtgate.telemetry.tap import SessionInfo, SessionSummary

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TWO64 = float(1 << 64)
_NEVER = 1 << 62

AUDIO_DELTA_TYPES = frozenset({"response.output_audio.delta", "response.audio.delta"})
"""Server events whose ``delta`` is base64 audio (GA name, then the beta name)."""

REDACTED = "<redacted>"


# -- sampling ---------------------------------------------------------------------------


def _hash64(*parts: str) -> int:
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _mix64(x: int) -> int:
    """splitmix64's finaliser: spreads consecutive counters over the whole 64-bit range."""
    x = (x + _GOLDEN) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def session_sampled(session_id: str, rate: float) -> bool:
    """Whether a session's events are logged at all (same answer for the same id, always)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return _hash64("session", session_id) / _TWO64 < rate


class _Gaps:
    """Which events of one type one session keeps: Bernoulli(rate) drawn as geometric gaps.

    Drawing the distance to the next kept event (rather than a coin per event)
    makes a sampled-out event cost one comparison, which matters for audio deltas.
    """

    __slots__ = ("_draws", "_log_miss", "_next", "_seed", "index")

    def __init__(self, seed: int, rate: float) -> None:
        self._seed = seed
        self._log_miss = math.log1p(-rate)
        self._draws = 0
        self.index = 0
        self._next = self._gap()

    def _gap(self) -> int:
        self._draws += 1
        u = _mix64((self._seed + self._draws * _GOLDEN) & _MASK64) / _TWO64
        if self._log_miss == 0.0:  # a rate too small for a float: nothing is ever kept
            return _NEVER
        return int(min(math.log1p(-u) / self._log_miss, _NEVER))

    def keep(self) -> bool:
        i = self.index
        self.index = i + 1
        if i < self._next:
            return False
        self._next = i + 1 + self._gap()
        return True


class TypeSampler:
    """Keeps a share of each rate-limited event type of one session, deterministically.

    Whether the n-th event of type T is kept depends only on the session id, T
    and n. State is a few numbers per configured type, so it is bounded by the
    configuration, not by the session's length.
    """

    __slots__ = ("_gaps", "_rates", "_session_id")

    def __init__(self, session_id: str, rates: Mapping[str, float]) -> None:
        self._session_id = session_id
        self._rates = {kind: rate for kind, rate in rates.items() if rate < 1.0}
        self._gaps: dict[str, _Gaps | None] = {}

    def keep(self, event_type: str) -> bool:
        if event_type not in self._rates:
            return True
        try:
            gaps = self._gaps[event_type]
        except KeyError:
            gaps = self._gaps[event_type] = self._start(event_type)
        return gaps is not None and gaps.keep()

    def _start(self, event_type: str) -> _Gaps | None:
        rate = self._rates[event_type]
        if rate <= 0.0:
            return None  # never kept
        return _Gaps(_hash64("type", self._session_id, event_type), rate)


def type_wanted(event_types: frozenset[str] | None, event_type: str | None) -> bool:
    """The ``logged_real_time_event_types`` filter (None means ``"*"``)."""
    if event_type is None:
        return False
    return event_types is None or event_type in event_types


# -- redaction --------------------------------------------------------------------------


def base64_decoded_len(text: str) -> int:
    """Bytes a base64 string decodes to, without decoding it."""
    n = len(text)
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return max(0, n * 3 // 4 - padding)


def audio_placeholder(text: str) -> str:
    return f"<audio {base64_decoded_len(text)} bytes>"


def _parse_path(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split(".") if part)


@attrs.frozen
class Redactor:
    """Removes what must not reach a log: audio (unless kept), configured paths, secrets.

    ``redact_paths`` are dotted paths from the event root (``session.instructions``,
    ``item.content.*.text``); ``*`` matches any key (or every element of a
    list), and a list met on the way is entered element by element anyway. Every remaining string goes through
    :func:`rtgate.errors.scrub` as the last guard against keys in error messages,
    instructions or tool output.
    """

    log_audio: bool = False
    redact_paths: tuple[tuple[str, ...], ...] = ()
    secrets: tuple[str, ...] = ()

    @classmethod
    def from_settings(
        cls, log_audio: bool, redact_paths: tuple[str, ...], secrets: tuple[str, ...] = ()
    ) -> Redactor:
        paths = tuple(p for p in (_parse_path(raw) for raw in redact_paths) if p)
        return cls(log_audio=log_audio, redact_paths=paths, secrets=secrets)

    def redact(self, event: dict[str, Any]) -> dict[str, Any]:
        """Redact a freshly decoded event in place and return it."""
        for path in self.redact_paths:
            _redact_path(event, path)
        if not self.log_audio and event.get("type") in AUDIO_DELTA_TYPES:
            delta = event.get("delta")
            if isinstance(delta, str):
                event["delta"] = audio_placeholder(delta)
        self._walk_dict(event)
        return event

    def text(self, value: str) -> str:
        """``value`` scrubbed of keys and of this gateway's secrets."""
        if may_hold_secret(value) or any(secret in value for secret in self.secrets):
            return scrub(value, self.secrets)
        return value

    def _walk_dict(self, obj: dict[str, Any]) -> None:
        for key, value in obj.items():
            if isinstance(value, str):
                if key == "audio":
                    # Audio content parts and input_audio_buffer.append carry base64 here;
                    # config objects named "audio" (session.audio) are dicts, never strings.
                    if not self.log_audio:
                        obj[key] = audio_placeholder(value)
                    continue  # base64 audio can look like a key by chance: never scrub it
                if key == "image_url" and value.startswith("data:"):
                    obj[key] = f"<image {len(value)} chars>"
                    continue
                obj[key] = self.text(value)
            elif isinstance(value, dict):
                self._walk_dict(value)
            elif isinstance(value, list):
                self._walk_list(value)

    def _walk_list(self, items: list[Any]) -> None:
        for i, value in enumerate(items):
            if isinstance(value, str):
                items[i] = self.text(value)
            elif isinstance(value, dict):
                self._walk_dict(value)
            elif isinstance(value, list):
                self._walk_list(value)


_SECRET_HINTS = ("sk-", "xai-", "aiza", "akia", "asia", "ek_", "ya29.", "bearer", "api", "key=")
"""A literal each of :func:`rtgate.errors.scrub`'s key patterns contains (lower-cased):
a cheap test that skips the regex for the ordinary strings of an event."""


def may_hold_secret(text: str) -> bool:
    lower = text.lower()
    return any(hint in lower for hint in _SECRET_HINTS)


def _redact_path(node: Any, path: tuple[str, ...]) -> None:
    if isinstance(node, list):
        inner = path[1:] if path and path[0] == "*" else path  # "*" over a list: each element
        for item in node:
            _redact_path(item, inner)
        return
    if not isinstance(node, dict) or not path:
        return
    head, rest = path[0], path[1:]
    keys = list(node) if head == "*" else [head] if head in node else []
    for key in keys:
        if rest:
            _redact_path(node[key], rest)
        else:
            node[key] = REDACTED


# -- records ----------------------------------------------------------------------------


def session_fields(info: SessionInfo) -> dict[str, Any]:
    """What every record of a session says about it (never the key, only its alias)."""
    return {
        "session_id": info.session_id,
        "key_alias": info.key_alias,
        "client_addr": info.client_addr,
        "model_group": info.model_group,
        "deployment_id": info.deployment_id,
        "provider": info.provider,
    }


def event_record(
    fields: Mapping[str, Any], direction: str, event: dict[str, Any], now: float
) -> dict[str, Any]:
    """The record of one logged event; ``event`` must already be redacted."""
    event_id = event.get("event_id")
    return {
        "record": "event",
        "ts": now,
        **fields,
        "direction": direction,
        "type": event.get("type"),
        "event_id": event_id if isinstance(event_id, str) else None,
        "event": event,
    }


def truncated_event_record(
    fields: Mapping[str, Any],
    direction: str,
    event_type: str,
    event_id: str | None,
    size: int,
    now: float,
) -> dict[str, Any]:
    """Stands in for an event whose record would exceed the size cap."""
    return {
        "record": "event",
        "ts": now,
        **fields,
        "direction": direction,
        "type": event_type,
        "event_id": event_id,
        "event": {"type": event_type, "truncated": True, "record_bytes": size},
    }


@attrs.frozen
class SessionLogStats:
    """What the event log itself did with one session's events."""

    sampled: bool
    events_logged: int = 0
    events_dropped: int = 0
    events_sampled_out: int = 0


def session_record(
    summary: SessionSummary, stats: SessionLogStats, secrets: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The end-of-session record: never sampled away, carries the summed usage."""
    info = summary.info
    return {
        "record": "session",
        "ts": summary.ended_at,
        **session_fields(info),
        "started_at": info.started_at,
        "ended_at": summary.ended_at,
        "duration": summary.duration,
        "close_code": summary.close_code,
        "close_reason": scrub(summary.close_reason, secrets),
        "closed_by": summary.closed_by,
        "frames_from_client": summary.frames_from_client,
        "frames_to_client": summary.frames_to_client,
        "bytes_from_client": summary.bytes_from_client,
        "bytes_to_client": summary.bytes_to_client,
        "responses": summary.responses,
        "usage": dict(summary.usage),
        "cost_usd": summary.cost_usd,
        "sampled": stats.sampled,
        "events_logged": stats.events_logged,
        "events_dropped": stats.events_dropped,
        "events_sampled_out": stats.events_sampled_out,
    }


def encode(record: Mapping[str, Any]) -> bytes:
    """One JSON line, without its newline."""
    return orjson.dumps(record)
