"""The logging seam: what the relay tells the event log, and nothing more.

The relay owns one :class:`SessionTap` per session (None when nothing of the
session is logged, so an unlogged session costs nothing). ``record`` must never
block or raise: implementations filter, sample and redact, then hand the record
to a bounded channel with ``send_nowait`` and count drops.

Directions are ``"client"`` (client to upstream, GA-shaped after the beta
bridge) and ``"server"`` (to the client, GA-shaped before the beta bridge).

:class:`ServedEventLog` adds what the server drives around it: the writer task,
reload, the final flush and the counters ``/metrics`` shows.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import trio

from rtgate.config.model import EventLogSettings


@attrs.frozen
class SessionInfo:
    """Who and what a session is, as far as logs may know (never a key)."""

    session_id: str
    key_alias: str | None
    client_addr: str
    model_group: str
    deployment_id: str
    provider: str
    started_at: float
    """Wall-clock UNIX time of the upgrade."""


@attrs.frozen
class SessionSummary:
    """The record written once when a session ends."""

    info: SessionInfo
    ended_at: float
    duration: float
    close_code: int
    close_reason: str
    closed_by: str
    """``client``, ``upstream``, ``gateway`` (limit, drain) or ``error``."""
    frames_from_client: int
    frames_to_client: int
    bytes_from_client: int
    bytes_to_client: int
    usage: dict[str, int]
    """Token usage summed over every ``response.done`` (input/output/total and details)."""
    responses: int
    cost_usd: float = 0.0
    """What the session's responses cost (the price table and ``model_info`` overrides)."""


class SessionTap(Protocol):
    def record(self, direction: str, frame: bytes, now: float) -> None:
        """One text frame passed the relay in ``direction`` at wall-clock ``now``."""


class EventLog(Protocol):
    def open_session(self, info: SessionInfo) -> SessionTap | None:
        """A tap for this session, or None when none of its events will be logged."""

    def close_session(self, summary: SessionSummary) -> None:
        """Queue the session record (never blocks; dropped and counted when full)."""


class ServedEventLog(EventLog, Protocol):
    """An event log as the server runs it (:class:`rtgate.telemetry.eventlog.EventLogger`)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: started in the server's nursery before the first session."""

    def reconfigure(self, settings: EventLogSettings) -> None:
        """SIGHUP: apply new sampling and redaction to new sessions."""

    async def aclose(self) -> None:
        """Flush what is queued (bounded by ``drain_timeout``) and close the sinks."""

    def snapshot(self) -> dict[str, Any]:
        """Counters for ``/metrics``: records seen, queued, written, dropped, per sink."""
