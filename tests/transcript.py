"""One harness for translator tests: client says X, upstream gets Y, client gets Z.

In the spirit of mitmproxy's Playbook: a test drives a pure translator through
the hooks the relay calls (``start``, ``on_client``, ``on_upstream``,
``on_timer``, ``on_reconnected``, ``on_reconnect_failed``,
``on_upstream_closed``, ``on_client_closed``) and reads what each step sent
each way. Every step returns a :class:`Step` (what that one call produced);
the :class:`Transcript` also keeps the whole conversation so far.

Every event a translator sends the client is checked against the openai SDK's
own GA server-event models (:func:`validate_server_event`), so a drift from
GA fails whichever test first shows it. A passthrough translator relays the
upstream's own events, right or wrong: ``relays_upstream=True`` skips the
check for those (fuzzing feeds them garbage on purpose).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import orjson
import pydantic
from openai.types.realtime import RealtimeServerEvent

from rtgate.translate.base import CloseClient, Outbox, Reconnect, Translator
from rtgate.translate.ga.session import REPORTED_ONLY
from rtgate.wire import Binary, Frame

Event = dict[str, Any]


def _server_event_models() -> dict[str, type[pydantic.BaseModel]]:
    """``type`` literal -> the SDK's model, from the ``RealtimeServerEvent`` union."""
    union = typing.get_args(RealtimeServerEvent)[0]
    models: dict[str, type[pydantic.BaseModel]] = {}
    for model in typing.get_args(union):
        (literal,) = typing.get_args(model.model_fields["type"].annotation)
        models[literal] = model
    return models


GA_SERVER_EVENTS = _server_event_models()


def _drift(value: object, path: str) -> Iterator[str]:
    """Keys the SDK's models do not declare, and parts or items that leave out their ``type``.

    The session OpenAI reports carries three keys its request model lacks (REPORTED_ONLY).
    """
    if isinstance(value, pydantic.BaseModel):
        for key in value.model_extra or {}:
            if path.endswith(".session") and key in REPORTED_ONLY:
                continue
            yield f"{path}.{key}: not a field of {type(value).__name__}"
        if "type" in type(value).model_fields and "type" not in value.model_fields_set:
            yield f"{path}: {type(value).__name__} without its 'type'"
        for name in type(value).model_fields:
            yield from _drift(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            yield from _drift(entry, f"{path}[{index}]")


def validate_server_event(event: object) -> pydantic.BaseModel:
    """``event`` as the SDK's GA model, strict: literal fields hold exactly their literal values,
    no value is coerced, no key is unknown to the SDK and no part or item leaves out its type."""
    assert isinstance(event, dict), f"not a JSON object: {event!r}"
    kind = event.get("type")
    model = GA_SERVER_EVENTS.get(kind) if isinstance(kind, str) else None
    assert model is not None, f"not a GA server event type: {kind!r}"
    try:
        parsed = model.model_validate(event, strict=True)
    except pydantic.ValidationError as exc:
        raise AssertionError(f"{kind} does not match the SDK's {model.__name__}: {exc}") from exc
    drift = list(_drift(parsed, kind))
    assert not drift, f"{kind} drifts from the SDK's GA types:\n" + "\n".join(drift)
    return parsed


@attrs.define
class Step:
    """What one translator call produced."""

    outbox: Outbox
    client: list[Event]
    """Events the client gets, decoded (binary frames are kept in ``outbox``)."""
    upstream: list[Any]
    """Messages the upstream gets, decoded as JSON (raw frames are in ``outbox``)."""

    def types(self) -> list[str]:
        return [event["type"] for event in self.client]

    @property
    def close(self) -> CloseClient | None:
        """The client is closed after this step (with this code and reason)."""
        return self.outbox.close

    @property
    def usage(self) -> dict[str, int] | None:
        """Usage of the responses that ended in this step (flattened, summed)."""
        return self.outbox.usage

    @property
    def reconnect(self) -> Reconnect | None:
        """The translator asked the relay to redial."""
        return self.outbox.reconnect


class Transcript:
    """A translator, a clock and everything said each way, every client event GA-checked.

    ``check_upstream`` checks (and may decode) each frame sent upstream, for
    example against the provider SDK's own message types; by default frames are
    decoded as JSON. ``relays_upstream``: the translator passes the upstream's
    events through, so frames it did not build itself go unchecked.
    ``check_client=False`` only where a passthrough is fed garbage on purpose
    (fuzzing): it relays the upstream's own events, repaired or not.
    """

    def __init__(
        self,
        translator: Translator,
        *,
        now: float = 100.0,
        check_upstream: Callable[[bytes], Any] | None = None,
        relays_upstream: bool = False,
        upstream_binary: bool = False,
        check_client: bool = True,
    ) -> None:
        self.t = translator
        self.now = now
        self.check_upstream = check_upstream or orjson.loads
        self.relays_upstream = relays_upstream
        self.upstream_binary = upstream_binary
        self.check_client = check_client
        self.client: list[Event] = []
        self.upstream: list[Any] = []
        self.raw_client: list[Frame] = []
        self.outboxes: list[Outbox] = []
        self.usage: list[dict[str, int]] = []
        self.closed: tuple[int, str] | None = None
        self._from_upstream: set[bytes] = set()

    # -- the relay's calls ------------------------------------------------------------

    def start(self) -> Step:
        return self._step(lambda out: self.t.start(out, self.now))

    def client_says(self, event: Event | Frame) -> Step:
        frame = event if isinstance(event, bytes | Binary) else orjson.dumps(event)
        return self._step(lambda out: self.t.on_client(frame, out, self.now))

    def upstream_says(self, message: Any, *, binary: bool | None = None) -> Step:
        """The upstream sends ``message`` (JSON-encoded unless already a frame), in a binary
        frame if ``binary`` (default: as this upstream sends them, ``upstream_binary``)."""
        if isinstance(message, bytes | Binary):
            frame: Frame = message
        else:
            data = orjson.dumps(message)
            as_binary = self.upstream_binary if binary is None else binary
            frame = Binary(data) if as_binary else data
        if self.relays_upstream:
            self._from_upstream.add(frame.data if isinstance(frame, Binary) else frame)
        return self._step(lambda out: self.t.on_upstream(frame, out, self.now))

    def advance(self, seconds: float) -> Step:
        """Time passes; ``on_timer`` runs if the translator's deadline came, as in the relay."""
        return self.advance_to(self.now + seconds)

    def advance_to(self, now: float) -> Step:
        self.now = now

        def fire(out: Outbox) -> None:
            deadline = self.t.deadline
            if deadline is not None and now >= deadline:
                self.t.on_timer(out, now)

        return self._step(fire)

    def reconnected(self) -> Step:
        return self._step(lambda out: self.t.on_reconnected(out, self.now))

    def reconnect_failed(self, reason: str) -> Step:
        return self._step(lambda out: self.t.on_reconnect_failed(reason, out, self.now))

    def upstream_closed(self, code: int, reason: str = "", error_type: str | None = None) -> Step:
        return self._step(
            lambda out: self.t.on_upstream_closed(
                code, reason, out, self.now, error_type=error_type
            )
        )

    def client_closed(self) -> Step:
        return self._step(lambda out: self.t.on_client_closed(out, self.now))

    # -- reading the transcript ---------------------------------------------------------

    def types(self) -> list[str]:
        """The ``type`` of every event the client got so far."""
        return [event["type"] for event in self.client]

    def take(self) -> tuple[list[Event], list[Any]]:
        """What each side got since the last ``take`` (and forget it)."""
        client, upstream = self.client, self.upstream
        self.client, self.upstream = [], []
        return client, upstream

    def take_types(self) -> list[str]:
        kinds = self.types()
        self.client = []
        return kinds

    def _step(self, call: Callable[[Outbox], None]) -> Step:
        out = Outbox()
        call(out)
        step = Step(out, [], [])
        for frame in out.to_client:
            self.raw_client.append(frame)
            if isinstance(frame, Binary):
                continue
            if not self.check_client or frame in self._from_upstream:
                continue  # relayed as the upstream said it
            event = orjson.loads(frame)
            validate_server_event(event)
            step.client.append(event)
        for frame in out.to_upstream:
            assert isinstance(frame, bytes | Binary), frame
            step.upstream.append(self.check_upstream(frame) if isinstance(frame, bytes) else frame)
        self.client += step.client
        self.upstream += step.upstream
        self.outboxes.append(out)
        if out.usage is not None:
            self.usage.append(out.usage)
        if out.close is not None:
            self.closed = (out.close.code, out.close.reason)
        return step


def check_response_order(events: list[Event]) -> None:
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
