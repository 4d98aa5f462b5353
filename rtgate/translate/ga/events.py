"""GA server events: a fresh ``event_id`` on each, ``type`` first (as OpenAI orders them)."""

from __future__ import annotations

from rtgate.translate.base import Outbox, new_id


def server_event(kind: str, **fields: object) -> dict[str, object]:
    """One GA server event of type ``kind`` with a fresh ``event_id``."""
    return {"type": kind, "event_id": new_id("event"), **fields}


def emit(out: Outbox, kind: str, **fields: object) -> None:
    """Queue one GA server event for the client."""
    out.client_json(server_event(kind, **fields))
