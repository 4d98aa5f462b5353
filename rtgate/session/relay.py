"""Relay one client-upstream pair until either side ends it.

Owns the per-session nursery: a pump per direction (read one side, run the
translator, write the other; a slow reader therefore slows the opposite
read, so memory stays bounded without queues) and a timer task (translator
deadlines, keepalive pings, dead-peer detection, idle and duration limits).
The first side to finish decides the outcome; the nursery is cancelled and
both sockets are closed with the mapped codes.

Hot path: per read batch, not per frame, are the clock read, the outbox flush
and the socket write. Frames are passed as the same ``bytes`` objects the
codec produced unless a translator or the beta bridge changes them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import orjson
import trio

from rtgate.config.model import Limits
from rtgate.errors import (
    BufferBudgetExceeded,
    GatewayShuttingDown,
    MessageTimeout,
    RtgateError,
    SessionExpired,
    SessionIdle,
    UpstreamClosed,
    close_reason,
    scrub,
)
from rtgate.net.budget import BufferBudget
from rtgate.net.client_connection import ClientConnection
from rtgate.net.wsconn import ConnectionClosed
from rtgate.protocol.beta import BetaBridge
from rtgate.providers.base import UpstreamLink
from rtgate.session.counters import RELAY_SAMPLE_MASK, RelayCounters
from rtgate.telemetry.tap import SessionTap
from rtgate.telemetry.turns import TurnWatch
from rtgate.translate.base import CloseClient, Outbox, Translator, error_event, flatten_usage
from rtgate.wire import Frame

log = logging.getLogger("rtgate.relay")


@attrs.define
class Outcome:
    """How the session ended."""

    client_code: int
    client_reason: str
    upstream_code: int
    upstream_reason: str
    closed_by: str
    """``client``, ``upstream``, ``gateway`` or ``error``."""
    abnormal: bool = False
    """The upstream broke (counts against the deployment early in a session)."""


@attrs.define
class RelayStats:
    frames_from_client: int = 0
    frames_to_client: int = 0
    bytes_to_client: int = 0
    responses: int = 0
    usage: dict[str, int] = attrs.field(factory=dict)


_NOTHING: list[Frame] = []
"""Stands in for a relayed batch while a pump waits (never mutated)."""

Redial = Callable[[], Awaitable[UpstreamLink]]
"""How the relay redials the same deployment when a translator asks (see ``Reconnect``)."""


class SessionEnding(Protocol):
    """Why a session must end after the response that just finished (a budget, a limit)."""

    @property
    def close_code(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def error_type(self) -> str: ...
    @property
    def error_code(self) -> str: ...


class ResponseAccounting(Protocol):
    """Told of each finished response (and, for transcription sessions, each transcript).

    Called on the relay's task at a response's end, never per frame: it must not block.
    """

    transcription: bool
    """Also report ``conversation.item.input_audio_transcription.completed`` usage."""

    def on_response(
        self, response_id: str | None, usage: Mapping[str, int]
    ) -> SessionEnding | None: ...

    def on_transcription(self, item_id: str, usage: Mapping[str, Any]) -> SessionEnding | None: ...


class Relay:
    """One session's data plane (see module docstring)."""

    def __init__(
        self,
        client: ClientConnection,
        upstream: UpstreamLink,
        translator: Translator,
        *,
        limits: Limits,
        bridge: BetaBridge | None = None,
        tap: SessionTap | None = None,
        reconnect: Redial | None = None,
        secrets: tuple[str, ...] = (),
        shutdown: trio.Event | None = None,
        counters: RelayCounters | None = None,
        budget: BufferBudget | None = None,
        accounting: ResponseAccounting | None = None,
        turns: TurnWatch | None = None,
        initial_config: Frame | None = None,
    ) -> None:
        self.accounting = accounting
        self.client = client
        self.upstream = upstream
        self.translator = translator
        self.limits = limits
        self.bridge = bridge
        self.tap = tap
        self.reconnector = reconnect
        self.secrets = secrets
        self.shutdown = shutdown
        self.stats = RelayStats()
        self.counters = counters if counters is not None else RelayCounters()
        self.outcome: Outcome | None = None
        self.turns = turns
        """Notices each response's first audio and end (see ``telemetry/turns.py``)."""
        self.initial_config = initial_config
        """A ``session.update`` the gateway applies before the client's first frame."""
        self._scope = trio.CancelScope()
        self._timer_scope = trio.CancelScope()
        self._started = 0.0
        self._upstream_last = 0.0
        self._reconnecting = False
        self.budget = budget if budget is not None else BufferBudget(None)
        """Where batches waiting for their write are counted (the gateway's budget)."""
        self._evicted = False
        """The budget dropped the client's unfinished message: the timer closes the session."""

    # -- public ------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Relay until one side ends; close both; return the outcome. Never raises
        for peer behaviour (only for cancellation from outside)."""
        now = trio.current_time()
        self._started = self._upstream_last = now
        self.client.watch_unfinished(self._message_started, self._message_evicted)
        try:
            with self._scope:
                out = Outbox()
                self.translator.start(out, now)
                first, self.upstream.first_frames = self.upstream.first_frames, []
                for frame in first:
                    self.translator.on_upstream(frame, out, now)
                first, frame = _NOTHING, b""  # relayed: not held for the session
                if self.initial_config is not None:
                    self.translator.on_client(self.initial_config, out, now)
                    self.initial_config = None
                await self._dispatch(out)
                if self.outcome is None:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        nursery.start_soon(self._pump_client)
                        nursery.start_soon(self._pump_upstream)
                        nursery.start_soon(self._timer)
        finally:
            outcome = self.outcome or Outcome(1001, "gateway stopped", 1001, "", "gateway")
            self.outcome = outcome
            with trio.CancelScope(shield=True):
                await self._close_both(outcome)
        return outcome

    # -- the two pumps -----------------------------------------------------------

    async def _pump_client(self) -> None:
        out = Outbox()
        client = self.client
        bridge = self.bridge
        tap = self.tap
        stats = self.stats
        counters = self.counters
        batch_no = -1  # the first batch of a session is sampled
        while True:
            try:
                frames = await client.receive()
            except ConnectionClosed as exc:
                self._client_closed(exc, out)
                await self._say_goodbye_upstream(out)
                return
            now = client.last_received  # the clock read the receive already made
            translator = self.translator
            stats.frames_from_client += len(frames)
            counters.add("client_in", len(frames), batch_bytes(frames))
            batch_no += 1
            try:
                if bridge is None and tap is None:
                    for frame in frames:
                        translator.on_client(frame, out, now)
                else:
                    self._client_frames(frames, out, now)
            except Exception:
                self._translator_failed(out)
            frames, frame = _NOTHING, b""  # an idle session holds no old batch
            await self._dispatch(out)
            if batch_no & RELAY_SAMPLE_MASK == 0:
                counters.latency.observe(trio.current_time() - now)

    def _client_frames(self, frames: list[Frame], out: Outbox, now: float) -> None:
        """The client batch when a beta bridge or a tap is in the way."""
        bridge = self.bridge
        tap = self.tap
        wall = time.time() if tap is not None else 0.0
        translator = self.translator
        for frame in frames:
            if bridge is not None and type(frame) is bytes:
                converted = bridge.client_to_ga(frame)
                if converted is None:
                    continue
                frame = converted
            if tap is not None and type(frame) is bytes:
                tap.record("client", frame, wall)
            translator.on_client(frame, out, now)

    async def _pump_upstream(self) -> None:
        out = Outbox()
        counters = self.counters
        batch_no = -1  # the first batch of a session is sampled
        while True:
            link = self.upstream
            try:
                frames = await link.receive()
            except UpstreamClosed as exc:
                if link is not self.upstream:
                    continue  # swapped by a reconnect; read the new one
                now = trio.current_time()
                self.translator.on_upstream_closed(
                    exc.code, exc.reason, out, now, error_type=exc.upstream_error_type
                )
                if out.close is None:
                    out.close = CloseClient(exc.close_code, "upstream closed")
                self._set_outcome(
                    Outcome(
                        out.close.code,
                        out.close.reason,
                        exc.code,
                        exc.reason,
                        "upstream",
                        abnormal=exc.code not in (1000, 1001),
                    )
                )
                await self._dispatch(out, final=True)
                return
            now = self._upstream_last = trio.current_time()
            counters.add("upstream_in", len(frames), batch_bytes(frames))
            batch_no += 1
            translator = self.translator
            try:
                for frame in frames:
                    translator.on_upstream(frame, out, now)
            except Exception:
                self._translator_failed(out)
            frames, frame = _NOTHING, b""  # an idle session holds no old batch
            await self._dispatch(out)
            if batch_no & RELAY_SAMPLE_MASK == 0:
                counters.latency.observe(trio.current_time() - now)

    # -- routing what translators produce ---------------------------------------------

    def _translator_failed(self, out: Outbox) -> None:
        """A translator bug must end only its own session, clearly, never the gateway."""
        log.exception("translator failed; closing the session with 1011")
        out.to_upstream.clear()
        out.client_json(
            error_event(
                "rtgate failed to translate an event; the session is closed",
                error_type="server_error",
                code="translation_error",
            )
        )
        out.close = CloseClient(1011, "internal translation error")

    async def _say_goodbye_upstream(self, out: Outbox) -> None:
        """Send what the translator queued for a leaving client (e.g. Nova's sessionEnd), bounded."""
        if out.to_upstream:
            with trio.move_on_after(1.0):
                try:
                    await self.upstream.send(out.to_upstream)
                except UpstreamClosed:
                    pass
        out.clear()
        self._scope.cancel()

    async def _dispatch(self, out: Outbox, *, final: bool = False) -> None:
        """Send what ``out`` holds, act on the rest, and leave it empty for the next batch."""
        if (
            self.accounting is not None
            and out.to_client
            and (out.responses_done or self.accounting.transcription)
        ):
            self._account(out)
        # A batch that ends responses is kept for the turn watch (once per response).
        ended = list(out.to_client) if out.responses_done and self.turns is not None else None
        try:
            try:
                if out.to_upstream and not final:
                    await self._send_upstream(out.to_upstream)
                if out.to_client:
                    await self._send_client(out.to_client)
            except UpstreamClosed as exc:
                # The reader task will see the close too; make sure the session ends.
                self._set_outcome(
                    Outcome(
                        1011, "upstream connection lost", exc.code, exc.reason, "upstream", True
                    )
                )
            except ConnectionClosed as exc:
                if not exc.by_peer and exc.code == 1011:
                    # The write timeout fired: the client stopped reading.
                    self.counters.limit("slow_consumer")
                self._set_outcome(
                    Outcome(exc.code, exc.reason, _upstream_code(exc.code), "", "client")
                )
            if ended is not None and self.turns is not None:
                self.turns.finished(ended, trio.current_time())
            if out.responses_done or out.reconnect is not None or out.close is not None:
                self._after_dispatch(out)
        finally:
            out.clear()
        deadline = self.translator.deadline
        if deadline is not None and deadline < self._timer_scope.deadline:
            self._timer_scope.deadline = deadline
        if self.outcome is not None:
            self._scope.cancel()

    def _after_dispatch(self, out: Outbox) -> None:
        """The rare parts of a dispatch: usage, a reconnect request, a close."""
        if out.responses_done:
            self._add_usage(out.usage or {}, out.responses_done)
        if out.reconnect is not None and not self._reconnecting and self.reconnector is not None:
            self._reconnecting = True
            self._nursery.start_soon(self._reconnect)
        close = out.close
        if close is not None:
            self._set_outcome(Outcome(close.code, close.reason, 1000, "", "gateway"))

    async def _send_client(self, frames: list[Frame]) -> None:
        self.stats.frames_to_client += len(frames)
        scrub_error_events(frames, self.secrets)
        turns = self.turns
        if turns is not None and turns.scanning:  # off while a response streams audio
            turns.outgoing(frames, trio.current_time)
        tap = self.tap
        if tap is not None:
            wall = time.time()
            for frame in frames:
                if type(frame) is bytes:
                    tap.record("server", frame, wall)
        if self.bridge is not None:
            frames = self._to_beta(frames)
        size = batch_bytes(frames)
        self.stats.bytes_to_client += size
        self.counters.add("client_out", len(frames), size)
        budget = self.budget
        budget.queue(size)  # queued until written: counted in the gateway's budget
        try:
            if size <= self.limits.max_pending_bytes:
                await self.client.send(frames)
                return
            for chunk in _bounded(frames, size, self.limits.max_pending_bytes):
                await self.client.send(chunk)
        finally:
            budget.held -= size

    async def _send_upstream(self, frames: list[Frame]) -> None:
        size = batch_bytes(frames)
        self.counters.add("upstream_out", len(frames), size)
        budget = self.budget
        budget.queue(size)
        try:
            if size <= self.limits.max_pending_bytes:
                await self.upstream.send(frames)
                return
            for chunk in _bounded(frames, size, self.limits.max_pending_bytes):
                await self.upstream.send(chunk)
        finally:
            budget.held -= size

    def _to_beta(self, frames: Sequence[Frame]) -> list[Frame]:
        assert self.bridge is not None
        converted: list[Frame] = []
        for frame in frames:
            if type(frame) is bytes:
                beta = self.bridge.server_to_beta(frame)
                if beta is not None:
                    converted.append(beta)
            else:
                converted.append(frame)
        return converted

    def _account(self, out: Outbox) -> None:
        """Report the responses (and transcripts) finished in this batch; if the key is now
        over a limit, the client gets an ``error`` after them and the session closes."""
        accounting = self.accounting
        assert accounting is not None
        ending: SessionEnding | None = None
        finished = _finished_responses(out.to_client) if out.responses_done else []
        if out.responses_done and not finished:  # a translator that sends no response.done
            finished = [(None, out.usage or {})]
        for response_id, usage in finished:
            ending = accounting.on_response(response_id, usage) or ending
        if accounting.transcription:
            for item_id, usage in _finished_transcripts(out.to_client):
                ending = accounting.on_transcription(item_id, usage) or ending
        if ending is not None and out.close is None and self.outcome is None:
            self.counters.limit(ending.error_code)
            out.client_json(
                error_event(ending.message, error_type=ending.error_type, code=ending.error_code)
            )
            out.close = CloseClient(ending.close_code, ending.error_code)

    def _add_usage(self, usage: dict[str, int], responses: int) -> None:
        self.stats.responses += responses
        total = self.stats.usage
        for key, value in usage.items():
            total[key] = total.get(key, 0) + value

    # -- timers: translator deadlines, keepalive, limits ---------------------------------

    async def _timer(self) -> None:
        limits = self.limits
        interval = limits.ping_interval
        out = Outbox()
        while True:
            now = trio.current_time()
            deadline = now + interval if interval > 0 else math.inf
            if limits.max_session_seconds:
                deadline = min(deadline, self._started + limits.max_session_seconds)
            if limits.idle_timeout:
                last = max(self.client.last_received, self._upstream_last)
                deadline = min(deadline, last + limits.idle_timeout)
            if self.translator.deadline is not None:
                deadline = min(deadline, self.translator.deadline)
            since = self.client.unfinished_since
            if limits.message_timeout and since is not None:
                deadline = min(deadline, since + limits.message_timeout)
            if self._evicted:
                deadline = -math.inf
            self._timer_scope = trio.CancelScope(deadline=deadline)
            with self._timer_scope:
                if self.shutdown is not None:
                    await self.shutdown.wait()
                    self._end_by_gateway(out, GatewayShuttingDown("the gateway is restarting"))
                    await self._dispatch(out)
                    return
                await trio.sleep_forever()
            now = trio.current_time()
            t_deadline = self.translator.deadline
            if t_deadline is not None and now >= t_deadline:
                try:
                    self.translator.on_timer(out, now)
                except Exception:
                    self._translator_failed(out)
                await self._dispatch(out)
            await self._check_limits(out, now)

    async def _check_limits(self, out: Outbox, now: float) -> None:
        limits = self.limits
        if self._evicted and out.close is None:
            self.client.drop_unfinished()
            self._end_by_gateway(
                out,
                BufferBudgetExceeded(
                    "the gateway holds too many unfinished messages and dropped this session's"
                    " largest one; try again later"
                ),
            )
        since = self.client.unfinished_since
        timeout = limits.message_timeout
        if timeout and since is not None and now - since >= timeout and out.close is None:
            self.client.drop_unfinished()
            self._end_by_gateway(
                out, MessageTimeout(f"a message was not completed within {timeout:g} s")
            )
        if limits.max_session_seconds and now - self._started >= limits.max_session_seconds:
            self._end_by_gateway(out, SessionExpired("maximum session duration reached"))
        last = max(self.client.last_received, self._upstream_last)
        if limits.idle_timeout and now - last >= limits.idle_timeout and out.close is None:
            self._end_by_gateway(out, SessionIdle("session idle for too long"))
        interval = limits.ping_interval
        if interval > 0 and out.close is None:
            if now - self.client.last_received >= interval + limits.ping_timeout:
                self.counters.limit("ping_timeout")
                self._set_outcome(
                    Outcome(1006, "client stopped responding", 1001, "client gone", "client")
                )
            elif now - self.client.last_received >= interval:
                try:
                    await self.client.ping()
                except ConnectionClosed:
                    pass
            try:
                await self.upstream.ping()
            except UpstreamClosed:
                pass
        await self._dispatch(out)

    def _end_by_gateway(self, out: Outbox, exc: RtgateError) -> None:
        """The one place an error becomes what the client sees: its ``error`` event and close."""
        self.counters.limit(exc.error_code)
        out.client_json(error_event(exc.message, error_type=exc.error_type, code=exc.error_code))
        out.close = CloseClient(exc.close_code, exc.message)

    def _message_started(self, now: float) -> None:
        """The client began a message it has not finished: bound it by ``message_timeout``."""
        timeout = self.limits.message_timeout
        if timeout and now + timeout < self._timer_scope.deadline:
            self._timer_scope.deadline = now + timeout

    def _message_evicted(self) -> None:
        """The gateway's buffer budget dropped the client's message (maybe from another
        session's task): the timer sends the ``error`` event and closes the session."""
        self._evicted = True
        self._timer_scope.deadline = -math.inf

    # -- reconnect (translators that must redial, e.g. before a Gemini goAway) ------------

    async def _reconnect(self) -> None:
        assert self.reconnector is not None
        out = Outbox()
        try:
            new = await self.reconnector()
        except Exception as exc:  # the old link stays in use; the translator is told
            self._reconnecting = False
            self.translator.on_reconnect_failed(str(exc), out, trio.current_time())
            await self._dispatch(out)
            return
        old = self.upstream
        self.upstream = new
        self.translator.on_reconnected(out, trio.current_time())
        for frame in new.first_frames:
            self.translator.on_upstream(frame, out, trio.current_time())
        self._reconnecting = False
        await self._dispatch(out)
        # The upstream pump may be reading ``old`` right now, so it must not be read here.
        await old.abandon(1000, "reconnected")

    # -- endings -----------------------------------------------------------------

    def _set_outcome(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
        self._scope.cancel()

    def _client_closed(self, exc: ConnectionClosed, out: Outbox) -> None:
        self.translator.on_client_closed(out, trio.current_time())
        if exc.by_peer:
            self._set_outcome(
                Outcome(exc.code, exc.reason, _upstream_code(exc.code), exc.reason, "client")
            )
        else:
            # rtgate failed the client connection (1002/1007/1009): tell it why first.
            self.counters.limit("max_message_bytes" if exc.code == 1009 else "client_protocol")
            self._set_outcome(Outcome(exc.code, exc.reason, 1000, "", "client"))

    async def _close_both(self, outcome: Outcome) -> None:
        reason = close_reason(outcome.client_reason, self.secrets)
        up_reason = close_reason(outcome.upstream_reason, self.secrets)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.client.close, outcome.client_code, reason)
            nursery.start_soon(self.upstream.aclose, outcome.upstream_code, up_reason)


def _finished_responses(frames: Sequence[Frame]) -> list[tuple[str | None, dict[str, int]]]:
    """``(response id, flattened usage)`` of each ``response.done`` in a batch for the client."""
    found: list[tuple[str | None, dict[str, int]]] = []
    for frame in frames:
        if type(frame) is bytes and frame.find(b'"response.done"', 0, 64) >= 0:
            try:
                event = orjson.loads(frame)
            except orjson.JSONDecodeError:
                continue
            response = event.get("response") if isinstance(event, dict) else None
            if not isinstance(response, dict):
                continue
            usage = response.get("usage")
            response_id = response.get("id")
            found.append(
                (
                    response_id if isinstance(response_id, str) else None,
                    flatten_usage(usage) if isinstance(usage, dict) else {},
                )
            )
    return found


_TRANSCRIPT_DONE = b'"conversation.item.input_audio_transcription.completed"'


def _finished_transcripts(frames: Sequence[Frame]) -> list[tuple[str, dict[str, Any]]]:
    """``(item id:content index, usage)`` of each finished transcription in a batch."""
    found: list[tuple[str, dict[str, Any]]] = []
    for frame in frames:
        if type(frame) is bytes and frame.find(_TRANSCRIPT_DONE, 0, 80) >= 0:
            try:
                event = orjson.loads(frame)
            except orjson.JSONDecodeError:
                continue
            usage = event.get("usage") if isinstance(event, dict) else None
            if isinstance(usage, dict):
                found.append((f"{event.get('item_id')}:{event.get('content_index', 0)}", usage))
    return found


def _upstream_code(client_code: int) -> int:
    """What the upstream is told when the client ended with ``client_code``."""
    if client_code in (1000, 1001) or 3000 <= client_code <= 4999:
        return client_code
    return 1001  # the client vanished or broke: the session is going away


def scrub_error_events(frames: list[Frame], secrets: tuple[str, ...]) -> None:
    """Remove keys from ``error`` events in place (a provider may echo the key it was sent).

    Only error events are looked at (a bounded byte search per frame), and they
    are scrubbed as JSON so the event stays valid.
    """
    for i, frame in enumerate(frames):
        if type(frame) is bytes and frame.find(b'"error"', 0, 64) >= 0:
            text = frame.decode("utf-8", "replace")
            if scrub(text, secrets) == text:
                continue
            try:
                event = orjson.loads(frame)
            except orjson.JSONDecodeError:
                frames[i] = scrub(text, secrets).encode()
                continue
            frames[i] = orjson.dumps(_scrub_strings(event, secrets))


def _scrub_strings(value: object, secrets: tuple[str, ...]) -> object:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub_strings(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_strings(v, secrets) for v in value]
    return value


def batch_bytes(frames: Sequence[Frame]) -> int:
    """Payload bytes of a batch (one ``len`` per message, no copy)."""
    try:
        return sum(map(len, frames))  # type: ignore[arg-type]
    except TypeError:  # a Binary in the batch
        pass
    total = 0
    for frame in frames:
        total += len(frame) if type(frame) is bytes else len(frame.data)  # type: ignore[union-attr]
    return total


def _bounded(frames: list[Frame], size: int, limit: int) -> list[list[Frame]]:
    """Split a batch so rtgate never serialises more than ``limit`` bytes for a peer at once.

    The pump waits for each write to finish before it reads again, so what
    rtgate holds for a peer that does not read is one chunk (plus a frame);
    the write timeout then ends the session (1011, ``slow_consumer``).
    """
    if size <= limit or len(frames) == 1:
        return [frames]
    chunks: list[list[Frame]] = []
    current: list[Frame] = []
    held = 0
    for frame in frames:
        n = len(frame) if type(frame) is bytes else len(frame.data)  # type: ignore[union-attr]
        if current and held + n > limit:
            chunks.append(current)
            current, held = [], 0
        current.append(frame)
        held += n
    chunks.append(current)
    return chunks
