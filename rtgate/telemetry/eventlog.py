"""The event log: session taps on the relay's hot path, one writer task, the sinks.

Owns the I/O half of event logging (the decisions are in
:mod:`rtgate.telemetry.sampling`). The relay calls :meth:`Tap.record` for every
text frame of a logged session; it sniffs the type without decoding, filters,
samples and checks for room *before* decoding, then redacts, encodes one JSON
line and hands it over with ``send_nowait``. A full queue drops the record and
counts it: the relay never waits for the log.

Memory is bounded by configuration, whatever the session length or event
rate: at most ``queue_size`` event records (and ``queue_max_bytes`` of them)
wait in the channel, plus ``session_queue_size`` slots reserved for session
records so every session record still gets in under an event flood; each sink
holds at most ``queue_batches`` batches. Nothing accumulates per session except
a few counters.

Lifecycle: the server starts :meth:`EventLogger.run` in its root nursery and
calls :meth:`EventLogger.aclose` on shutdown, which drains what is queued within
``drain_timeout`` (shielded), spooling what a down sink cannot take.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from rtgate.config.model import EventLogSettings, GatewayConfig
from rtgate.protocol.events import parse_event, sniff_type
from rtgate.telemetry import sampling
from rtgate.telemetry.sinks import Batch, Sink, build_sink
from rtgate.telemetry.tap import SessionInfo, SessionSummary

log = logging.getLogger("rtgate.eventlog")

_Item = tuple[bytes, bool]
"""A JSON line, and whether it is an event record (counted against the event budget)."""


@attrs.define
class EventLogCounters:
    """What happened to events on their way to the sinks (for metrics)."""

    events_seen: int = 0
    events_filtered: int = 0
    events_sampled_out: int = 0
    events_queued: int = 0
    events_truncated: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)
    """Event records lost before the writer, by reason: ``queue_full``, ``bytes_full``,
    ``closed``, ``undecodable``, ``error``."""
    sessions_opened: int = 0
    sessions_sampled: int = 0
    sessions_queued: int = 0
    sessions_dropped: int = 0
    records_written: int = 0
    """Records the writer handed to the sinks (each sink counts its own outcome)."""
    batches: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class Tap:
    """The :class:`~rtgate.telemetry.tap.SessionTap` of one sampled session."""

    __slots__ = ("_fields", "_log", "_sampler", "dropped", "logged", "sampled_out")

    def __init__(self, log: EventLogger, info: SessionInfo) -> None:
        self._log = log
        self._fields = sampling.session_fields(info)
        self._sampler = sampling.TypeSampler(info.session_id, log.settings.type_sample_rates)
        self.logged = 0
        self.dropped = 0
        self.sampled_out = 0

    def record(self, direction: str, frame: bytes, now: float) -> None:
        log = self._log
        counters = log.counters
        counters.events_seen += 1
        event_type = sniff_type(frame)
        if not sampling.type_wanted(log.event_types, event_type):
            counters.events_filtered += 1
            return
        assert event_type is not None
        if not self._sampler.keep(event_type):
            counters.events_sampled_out += 1
            self.sampled_out += 1
            return
        reason = log.room_for_event()
        if reason is None:
            try:
                reason = self._encode_and_send(direction, event_type, frame, now)
            except Exception:  # never let logging break a session
                log_exception_once(log)
                reason = "error"
        if reason is None:
            self.logged += 1
        else:
            counters.drop(reason)
            self.dropped += 1

    def _encode_and_send(
        self, direction: str, event_type: str, frame: bytes, now: float
    ) -> str | None:
        log = self._log
        event = parse_event(frame)
        if event is None:
            return "undecodable"
        log.redactor.redact(event)
        line = sampling.encode(sampling.event_record(self._fields, direction, event, now))
        if len(line) > log.settings.max_record_bytes:
            log.counters.events_truncated += 1
            event_id = event.get("event_id")
            line = sampling.encode(
                sampling.truncated_event_record(
                    self._fields, direction, event_type,
                    event_id if isinstance(event_id, str) else None, len(line), now,
                )
            )  # fmt: skip
        return log.send_event(line)

    def stats(self) -> sampling.SessionLogStats:
        return sampling.SessionLogStats(
            sampled=True,
            events_logged=self.logged,
            events_dropped=self.dropped,
            events_sampled_out=self.sampled_out,
        )


def log_exception_once(logger: EventLogger) -> None:
    if not logger.reported_error:
        logger.reported_error = True
        log.exception("event log: a record could not be built (further errors only counted)")


class EventLogger:
    """Implements :class:`~rtgate.telemetry.tap.EventLog` over bounded channels and sinks."""

    def __init__(
        self,
        settings: EventLogSettings,
        sinks: Sequence[Sink],
        *,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.sinks = tuple(sinks)
        self.secrets = secrets
        self.event_types = settings.event_types
        self.redactor = sampling.Redactor.from_settings(
            settings.log_audio, settings.redact_paths, secrets
        )
        self.counters = EventLogCounters()
        self.reported_error = False
        self._event_slots = max(1, settings.queue_size)
        self._send, self._receive = trio.open_memory_channel[_Item](
            self._event_slots + max(1, settings.session_queue_size)
        )
        self._queued_events = 0
        self._queued_bytes = 0
        self._taps: dict[str, Tap] = {}
        self._closed = False
        self._started = False
        self._finished = trio.Event()
        self._run_scope: trio.CancelScope | None = None
        self._drain_deadline = math.inf
        self._pending: list[bytes] = []

    @classmethod
    def from_settings(
        cls, settings: EventLogSettings, *, secrets: tuple[str, ...] = ()
    ) -> EventLogger:
        """Build the sinks of ``settings`` (:class:`~rtgate.errors.ConfigError` if one is wrong)."""
        sinks = [build_sink(spec, i) for i, spec in enumerate(settings.sinks)]
        return cls(settings, sinks, secrets=secrets)

    @classmethod
    def for_config(cls, config: GatewayConfig) -> EventLogger | None:
        """The gateway's event log, or None when no sink is configured."""
        if not config.event_log.sinks:
            return None
        return cls.from_settings(config.event_log, secrets=config.secret_values())

    def reconfigure(self, settings: EventLogSettings) -> None:
        """Apply a reloaded configuration (SIGHUP).

        The filter, redaction, batching and byte caps change at once; sampling
        rates apply to sessions opened from now on. Sinks, ``queue_size`` and
        ``session_queue_size`` are fixed for the life of the process (changing
        them needs a restart, which is logged).
        """
        fixed = ("sinks", "queue_size", "session_queue_size")
        changed = [
            name for name in fixed if getattr(settings, name) != getattr(self.settings, name)
        ]
        if changed:
            log.warning("event log: %s change on restart only", ", ".join(changed))
            settings = attrs.evolve(
                settings, **{name: getattr(self.settings, name) for name in fixed}
            )
        self.settings = settings
        self.event_types = settings.event_types
        self.redactor = sampling.Redactor.from_settings(
            settings.log_audio, settings.redact_paths, self.secrets
        )

    # -- the EventLog protocol (relay side: never blocks, never raises) --------------------

    def open_session(self, info: SessionInfo) -> Tap | None:
        self.counters.sessions_opened += 1
        if self._closed or self.event_types == frozenset():
            return None
        if not sampling.session_sampled(info.session_id, self.settings.session_sample_rate):
            return None
        self.counters.sessions_sampled += 1
        tap = Tap(self, info)
        self._taps[info.session_id] = tap
        return tap

    def close_session(self, summary: SessionSummary) -> None:
        tap = self._taps.pop(summary.info.session_id, None)
        stats = tap.stats() if tap is not None else sampling.SessionLogStats(sampled=False)
        try:
            line = sampling.encode(sampling.session_record(summary, stats, self.secrets))
        except Exception:
            log_exception_once(self)
            self.counters.sessions_dropped += 1
            return
        if self._closed:
            self.counters.sessions_dropped += 1
            return
        try:
            self._send.send_nowait((line, False))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.counters.sessions_dropped += 1
            return
        self.counters.sessions_queued += 1

    def room_for_event(self) -> str | None:
        """None if an event record may be queued now, else why not (checked before decoding)."""
        if self._closed:
            return "closed"
        if self._queued_events >= self._event_slots:
            return "queue_full"
        if self._queued_bytes >= self.settings.queue_max_bytes:
            return "bytes_full"
        return None

    def send_event(self, line: bytes) -> str | None:
        if self._queued_bytes + len(line) > self.settings.queue_max_bytes:
            return "bytes_full"
        try:
            self._send.send_nowait((line, True))
        except trio.WouldBlock:
            return "queue_full"
        except trio.ClosedResourceError:
            return "closed"
        self._queued_events += 1
        self._queued_bytes += len(line)
        self.counters.events_queued += 1
        return None

    @property
    def queued(self) -> int:
        """Event records waiting for the writer."""
        return self._queued_events

    # -- the writer ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Batch queued records to the sinks until :meth:`aclose`; drains on the way out."""
        self._started = True
        try:
            with trio.CancelScope() as self._run_scope:
                async with trio.open_nursery() as nursery:
                    outs = []
                    for sink in self.sinks:
                        send, receive = trio.open_memory_channel[Batch](sink.queue_batches)
                        nursery.start_soon(sink.run, receive)
                        outs.append(send)
                    task_status.started()
                    try:
                        await self._write_loop(outs)
                    finally:
                        for sink in self.sinks:
                            sink.draining = True
                        for out in outs:
                            out.close()
        finally:
            # Reached when cancelled from outside too: what is still queued gets one
            # bounded, shielded chance, straight to the sinks (which spool on failure).
            with trio.CancelScope(shield=True) as scope:
                own = trio.current_time() + self.settings.drain_timeout
                scope.deadline = min(own, self._drain_deadline)
                await self._drain_inline()
            self._finished.set()

    async def _write_loop(self, outs: list[trio.MemorySendChannel[Batch]]) -> None:
        settings = self.settings
        while True:
            try:
                first = await self._receive.receive()
            except trio.EndOfChannel:
                return
            # Kept on self so a cancellation mid-batch still flushes it (see run).
            batch = self._pending = [self._take(first)]
            self._take_ready(batch)
            if len(batch) < settings.batch_size:
                with trio.move_on_after(settings.flush_interval):
                    while len(batch) < settings.batch_size:
                        try:
                            item = await self._receive.receive()
                        except trio.EndOfChannel:
                            break
                        batch.append(self._take(item))
                        self._take_ready(batch)
            self.counters.batches += 1
            self.counters.records_written += len(batch)
            for out in outs:
                # Backpressure, not drops: a slow sink fills the queue, and the taps drop
                # events while session records still have their reserved slots.
                await out.send(batch)
            self._pending = []

    def _take(self, item: _Item) -> bytes:
        line, is_event = item
        if is_event:
            self._queued_events -= 1
            self._queued_bytes -= len(line)
        return line

    def _take_ready(self, batch: list[bytes]) -> None:
        while len(batch) < self.settings.batch_size:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            batch.append(self._take(item))

    async def _drain_inline(self) -> None:
        """Hand every record still queued to each sink, one attempt each, then spool."""
        for sink in self.sinks:
            sink.draining = True
        while True:
            batch, self._pending = self._pending, []
            self._take_ready(batch)
            if not batch:
                return
            self.counters.batches += 1
            self.counters.records_written += len(batch)
            for sink in self.sinks:
                await sink.handle(batch)

    async def aclose(self) -> None:
        """Stop taking records and flush what is queued, within ``drain_timeout``."""
        if not self._closed:
            self._closed = True
            self._send.close()
            self._drain_deadline = trio.current_time() + self.settings.drain_timeout
        with trio.CancelScope(shield=True):
            if not self._started:
                with trio.move_on_after(self.settings.drain_timeout):
                    await self._drain_inline()
                for sink in self.sinks:
                    await sink.destination.aclose()
                return
            with trio.move_on_at(self._drain_deadline):
                await self._finished.wait()
            if not self._finished.is_set() and self._run_scope is not None:
                self._run_scope.cancel()
                await self._finished.wait()

    def snapshot(self) -> dict[str, Any]:
        """Counters of the log and of each sink, for the control plane."""
        return {
            **attrs.asdict(self.counters),
            "queued": self._queued_events,
            "queued_bytes": self._queued_bytes,
            "sinks": {
                sink.name: {
                    **attrs.asdict(sink.counters),
                    "down": sink.down,
                    "spool_bytes": sink.spool.bytes if sink.spool is not None else 0,
                }
                for sink in self.sinks
            },
        }
