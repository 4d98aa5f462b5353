"""The event log: taps on the relay path, the bounded queue, the writer, shutdown."""

from __future__ import annotations

import base64
import math
import tracemalloc
from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.lowlevel
import trio.testing

from rtgate.config.model import EventLogSettings, GatewayConfig
from rtgate.errors import ConfigError
from rtgate.telemetry.eventlog import EventLogger
from rtgate.telemetry.sinks import Sink, build_sink
from rtgate.telemetry.tap import SessionInfo, SessionSummary


class MemoryDestination:
    """Keeps every delivered batch; ``gate`` (when set) stalls delivery until it is set."""

    describe = "memory"

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.gate: trio.Event | None = None
        self.closed = False

    async def deliver(self, lines: Sequence[bytes]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(list(lines))

    async def aclose(self) -> None:
        self.closed = True

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for batch in self.batches for line in batch]

    def events(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["record"] == "event"]


def make_log(**settings: Any) -> tuple[EventLogger, MemoryDestination]:
    dest = MemoryDestination()
    logger = EventLogger(EventLogSettings(**settings), [Sink("memory", dest)])
    return logger, dest


def info(session_id: str = "sess_1") -> SessionInfo:
    return SessionInfo(
        session_id=session_id,
        key_alias="team-a",
        client_addr="127.0.0.1:40000",
        model_group="gpt-realtime",
        deployment_id="dep-1",
        provider="openai",
        started_at=1000.0,
    )


def summary(session: SessionInfo, usage: dict[str, int] | None = None) -> SessionSummary:
    return SessionSummary(
        info=session,
        ended_at=1002.0,
        duration=2.0,
        close_code=1000,
        close_reason="",
        closed_by="client",
        frames_from_client=3,
        frames_to_client=5,
        bytes_from_client=300,
        bytes_to_client=500,
        usage=usage or {},
        responses=1,
    )


def frame(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields})


AUDIO = base64.b64encode(bytes(960)).decode()

CONVERSATION = [
    ("server", frame("session.created", event_id="e1", session={"id": "sess_up"})),
    ("client", frame("session.update", session={"instructions": "be nice"})),
    ("client", frame("input_audio_buffer.append", audio=AUDIO)),
    ("client", frame("response.create", event_id="c1")),
    ("server", frame("response.created", event_id="e2")),
    ("server", frame("response.output_audio.delta", event_id="e3", delta=AUDIO)),
    ("server", frame("response.done", event_id="e4", response={"usage": {"total_tokens": 9}})),
]


async def run_session(
    settings: dict[str, Any], frames: Sequence[tuple[str, bytes]] = CONVERSATION
) -> tuple[EventLogger, MemoryDestination]:
    logger, dest = make_log(**settings)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(logger.run)
            session = info()
            tap = logger.open_session(session)
            assert tap is not None
            for i, (direction, data) in enumerate(frames):
                tap.record(direction, data, 1000.0 + i)
            logger.close_session(summary(session, {"total_tokens": 9}))
            await logger.aclose()
    return logger, dest


async def test_default_filter_logs_litellms_three_types_in_both_directions() -> None:
    _, dest = await run_session({})
    events = dest.events()
    assert [(e["direction"], e["type"]) for e in events] == [
        ("server", "session.created"),
        ("client", "response.create"),
        ("server", "response.done"),
    ]
    first = events[0]
    assert first["session_id"] == "sess_1"
    assert first["key_alias"] == "team-a"
    assert first["client_addr"] == "127.0.0.1:40000"
    assert first["model_group"] == "gpt-realtime"
    assert first["deployment_id"] == "dep-1"
    assert first["provider"] == "openai"
    assert first["event_id"] == "e1"
    assert first["ts"] == 1000.0
    assert first["event"] == {
        "type": "session.created",
        "event_id": "e1",
        "session": {"id": "sess_up"},
    }
    assert events[1]["event_id"] == "c1"


async def test_star_logs_everything_with_audio_redacted() -> None:
    _, dest = await run_session({"event_types": None})
    events = dest.events()
    assert [e["type"] for e in events] == [
        kind for _, kind in ((d, orjson.loads(f)["type"]) for d, f in CONVERSATION)
    ]
    append = next(e for e in events if e["type"] == "input_audio_buffer.append")
    assert append["event"]["audio"] == "<audio 960 bytes>"
    delta = next(e for e in events if e["type"] == "response.output_audio.delta")
    assert delta["event"]["delta"] == "<audio 960 bytes>"
    assert AUDIO not in orjson.dumps(dest.records()).decode()


async def test_list_filter_and_redact_paths() -> None:
    _, dest = await run_session(
        {
            "event_types": frozenset({"session.update", "input_audio_buffer.append"}),
            "redact_paths": ("session.instructions",),
            "log_audio": True,
        }
    )
    events = dest.events()
    assert [e["type"] for e in events] == ["session.update", "input_audio_buffer.append"]
    assert events[0]["event"]["session"]["instructions"] == "<redacted>"
    assert events[1]["event"]["audio"] == AUDIO


async def test_session_record_written_with_usage_even_when_response_done_is_filtered() -> None:
    logger, dest = await run_session({"event_types": frozenset({"session.created"})})
    records = dest.records()
    assert [r["type"] for r in records if r["record"] == "event"] == ["session.created"]
    (session,) = [r for r in records if r["record"] == "session"]
    assert session["usage"] == {"total_tokens": 9}
    assert session["sampled"] is True
    assert session["events_logged"] == 1
    assert session["duration"] == 2.0
    assert session["closed_by"] == "client"
    assert logger.counters.events_filtered == len(CONVERSATION) - 1


async def test_unsampled_session_logs_no_events_but_its_session_record() -> None:
    logger, dest = make_log(session_sample_rate=0.0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(logger.run)
            assert logger.open_session(info()) is None
            logger.close_session(summary(info(), {"total_tokens": 5}))
            await logger.aclose()
    (record,) = dest.records()
    assert record["record"] == "session"
    assert record["sampled"] is False
    assert record["usage"] == {"total_tokens": 5}


def test_session_sampling_share_of_sessions() -> None:
    logger = EventLogger(EventLogSettings(session_sample_rate=0.3), [])
    n = 4000
    taps = [logger.open_session(info(f"sess_{i}")) for i in range(n)]
    kept = sum(t is not None for t in taps)
    assert abs(kept - 0.3 * n) < 5 * math.sqrt(n * 0.3 * 0.7)
    # Deterministic: the same ids give the same decision on another instance.
    again = EventLogger(EventLogSettings(session_sample_rate=0.3), [])
    assert [again.open_session(info(f"sess_{i}")) is not None for i in range(n)] == [
        t is not None for t in taps
    ]


def test_per_type_sampling_in_the_tap() -> None:
    kind = "response.output_audio.delta"
    settings = EventLogSettings(
        event_types=None, type_sample_rates={kind: 0.01}, queue_size=100_000
    )
    logger = EventLogger(settings, [])
    tap = logger.open_session(info())
    assert tap is not None
    n = 20_000
    data = frame(kind, delta="AAAA")
    for _ in range(n):
        tap.record("server", data, 0.0)
        tap.record("server", frame("response.done"), 0.0)
    kept = logger.counters.events_queued - n  # every response.done is kept
    assert abs(kept - 0.01 * n) < 5 * math.sqrt(n * 0.01 * 0.99)
    assert logger.counters.events_sampled_out == n - kept


async def test_record_never_blocks_and_memory_is_bounded_by_the_queue() -> None:
    """10^5 records against a writer stuck on its sink: bounded memory, drops counted."""
    logger, dest = make_log(event_types=None, queue_size=100, batch_size=10)
    dest.gate = trio.Event()  # the sink never finishes a delivery
    data = frame("response.output_text.delta", delta="hello " * 20)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(logger.run)
            tap = logger.open_session(info())
            assert tap is not None
            tracemalloc.start()
            try:
                for round_ in range(100):
                    if round_ == 20:  # steady state: queue and sink buffers full
                        baseline, _ = tracemalloc.get_traced_memory()
                    for _ in range(1000):
                        tap.record("server", data, 0.0)  # synchronous: cannot wait
                    await trio.lowlevel.checkpoint()  # the writer runs, and stays stuck
                current, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert logger.queued == 100
            in_flight = logger.counters.events_queued - logger.queued
            assert in_flight <= 10 * (1 + 8 + 1)  # a batch in the writer, 8 queued, 1 in delivery
            assert logger.counters.dropped["queue_full"] == 100_000 - logger.counters.events_queued
            assert current - baseline < 64 * 1024  # nothing grows with the number of records
            # Session records have their own slots and still get in.
            logger.close_session(summary(info()))
            assert logger.counters.sessions_queued == 1
            dest.gate.set()
            await logger.aclose()
    assert len(dest.events()) == logger.counters.events_queued
    assert dest.records()[-1]["record"] == "session"


def test_queue_byte_budget() -> None:
    logger = EventLogger(
        EventLogSettings(event_types=None, queue_size=10_000, queue_max_bytes=10_000), []
    )
    tap = logger.open_session(info())
    assert tap is not None
    data = frame("response.output_text.delta", delta="x" * 500)
    for _ in range(100):
        tap.record("server", data, 0.0)
    assert logger.snapshot()["queued_bytes"] <= 10_000
    assert logger.counters.dropped["bytes_full"] > 0
    assert logger.counters.events_queued + logger.counters.dropped["bytes_full"] == 100


async def test_stalled_sink_drops_events_but_keeps_session_records() -> None:
    logger, dest = make_log(event_types=None, queue_size=50, session_queue_size=20, batch_size=10)
    dest.gate = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(logger.run)
            sessions = [info(f"sess_{i}") for i in range(10)]
            taps = [logger.open_session(s) for s in sessions]
            data = frame("response.output_text.delta", delta="hi")
            for round_ in range(200):
                for tap in taps:
                    assert tap is not None
                    tap.record("server", data, float(round_))
                await trio.lowlevel.checkpoint()  # let the writer run; it stays stuck on the sink
            for s in sessions:
                logger.close_session(summary(s))
            assert logger.counters.dropped["queue_full"] > 1000
            dest.gate.set()
            await logger.aclose()
    records = dest.records()
    assert sorted(r["session_id"] for r in records if r["record"] == "session") == sorted(
        s.session_id for s in sessions
    )
    per_session = {r["session_id"]: r for r in records if r["record"] == "session"}
    assert (
        sum(r["events_dropped"] for r in per_session.values())
        == logger.counters.dropped["queue_full"]
    )
    assert len(dest.events()) == logger.counters.events_queued


async def test_flush_interval_and_batch_size(autojump_clock: trio.testing.MockClock) -> None:
    logger, dest = make_log(event_types=None, batch_size=5, flush_interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(logger.run)
        tap = logger.open_session(info())
        assert tap is not None
        tap.record("client", frame("response.create"), 0.0)
        await trio.sleep(0.9)
        assert dest.batches == []  # waiting for more, up to flush_interval
        await trio.sleep(0.2)
        assert len(dest.batches) == 1 and len(dest.batches[0]) == 1
        start = trio.current_time()
        for _ in range(12):
            tap.record("client", frame("response.create"), 0.0)
        await trio.sleep(0.01)
        assert [len(b) for b in dest.batches] == [1, 5, 5]  # full batches go at once
        assert trio.current_time() - start < 0.1
        await trio.sleep(1.0)
        assert [len(b) for b in dest.batches] == [1, 5, 5, 2]
        await logger.aclose()


async def test_aclose_drains_everything_queued(autojump_clock: trio.testing.MockClock) -> None:
    logger, dest = make_log(
        event_types=None, batch_size=100, flush_interval=3600.0, queue_size=5000
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(logger.run)
        tap = logger.open_session(info())
        assert tap is not None
        for i in range(2500):
            tap.record("client", frame("response.create", event_id=f"c{i}"), 0.0)
        logger.close_session(summary(info()))
        await logger.aclose()
    records = dest.records()
    assert [r["event_id"] for r in records[:-1]] == [f"c{i}" for i in range(2500)]
    assert records[-1]["record"] == "session"
    assert dest.closed
    # Once closed, nothing more is accepted (and the refusal is counted).
    tap.record("client", frame("response.create"), 0.0)
    assert logger.counters.dropped["closed"] == 1


async def test_cancelled_writer_still_flushes_queued_records() -> None:
    logger, dest = make_log(event_types=None, flush_interval=3600.0, batch_size=1000)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(logger.run)
            tap = logger.open_session(info())
            assert tap is not None
            for _ in range(10):
                tap.record("client", frame("response.create"), 0.0)
            logger.close_session(summary(info()))
            await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert len(dest.records()) == 11


async def test_aclose_is_bounded_when_a_sink_hangs(autojump_clock: trio.testing.MockClock) -> None:
    logger, dest = make_log(event_types=None, drain_timeout=2.0)
    dest.gate = trio.Event()  # never set
    async with trio.open_nursery() as nursery:
        await nursery.start(logger.run)
        tap = logger.open_session(info())
        assert tap is not None
        tap.record("client", frame("response.create"), 0.0)
        start = trio.current_time()
        await logger.aclose()
        assert trio.current_time() - start <= 2.5


async def test_aclose_without_a_running_writer_drains_inline() -> None:
    logger, dest = make_log(event_types=None)
    tap = logger.open_session(info())
    assert tap is not None
    tap.record("server", frame("response.done"), 0.0)
    logger.close_session(summary(info()))
    with trio.fail_after(5):
        await logger.aclose()
    assert [r["record"] for r in dest.records()] == ["event", "session"]


def test_bad_frames_are_counted_not_raised() -> None:
    logger = EventLogger(EventLogSettings(event_types=None), [])
    tap = logger.open_session(info())
    assert tap is not None
    tap.record("client", b"not json", 0.0)
    tap.record("client", b'{"type":"response.create",', 0.0)
    tap.record("client", b'{"no_type": 1}', 0.0)
    assert logger.counters.events_filtered == 2
    assert logger.counters.dropped == {"undecodable": 1}


async def test_oversized_records_are_truncated() -> None:
    _, dest = await run_session(
        {"event_types": None, "max_record_bytes": 2000},
        [("client", frame("session.update", event_id="u1", session={"instructions": "x" * 5000}))],
    )
    (event,) = dest.events()
    assert event["event_id"] == "u1"
    assert event["event"]["truncated"] is True
    assert event["event"]["record_bytes"] > 5000


async def test_secrets_never_reach_records() -> None:
    logger, dest = make_log(event_types=None)
    logger = EventLogger(
        attrs.evolve(logger.settings), logger.sinks, secrets=("upstream-secret-value",)
    )
    tap = logger.open_session(info())
    assert tap is not None
    tap.record(
        "server",
        frame("error", error={"message": "bad key sk-live-0123456789 and upstream-secret-value"}),
        0.0,
    )
    session = info()
    closing = attrs.evolve(summary(session), close_reason="Bearer abcdefghijklmnop")
    logger.close_session(closing)
    with trio.fail_after(5):
        await logger.aclose()
    text = b"".join(line for batch in dest.batches for line in batch).decode()
    assert "sk-live-0123456789" not in text
    assert "upstream-secret-value" not in text
    assert "abcdefghijklmnop" not in text


def test_construction_from_config() -> None:
    config = GatewayConfig(deployments=())
    assert EventLogger.for_config(config) is None
    settings = EventLogSettings(
        sinks=({"type": "stderr"}, {"type": "file", "path": "/tmp/x.jsonl"})
    )
    logger = EventLogger.from_settings(settings)
    assert [s.name for s in logger.sinks] == ["stderr0", "file1"]
    with pytest.raises(ConfigError):
        EventLogger.from_settings(EventLogSettings(sinks=({"type": "kafka"},)))
    assert isinstance(build_sink({"type": "stderr", "name": "err"}), Sink)


def test_reconfigure_applies_filter_and_redaction_but_keeps_sinks_and_queue() -> None:
    logger, _ = make_log(queue_size=10)
    tap = logger.open_session(info())
    assert tap is not None
    tap.record("client", frame("session.update", session={"instructions": "x"}), 0.0)
    assert logger.counters.events_queued == 0
    new = EventLogSettings(
        event_types=frozenset({"session.update"}),
        redact_paths=("session.instructions",),
        queue_size=99,
        sinks=({"type": "stderr"},),
    )
    logger.reconfigure(new)
    tap.record("client", frame("session.update", session={"instructions": "x"}), 0.0)
    assert logger.counters.events_queued == 1
    assert logger.settings.queue_size == 10
    assert logger.settings.sinks == ()
    line, _ = logger._receive.receive_nowait()
    assert orjson.loads(line)["event"]["session"]["instructions"] == "<redacted>"
