"""OpenTelemetry traces of realtime sessions: one span per session, its dial and its turns.

Owns the process's tracer provider (the OpenTelemetry SDK; never the global
one, so tests may run several gateways), the OTLP exporter, the bounded export
queue and its counters. Spans are made at setup (session, dial), at each
response's end (a turn span, built after the fact with its real start and end
times, with the response's cost) and at teardown (with the session's cost); never
per frame.

Export runs on the SDK's batch thread. In front of it sits :class:`_BoundedQueue`,
which refuses (and counts) a span when ``max_queue_size`` finished spans are
already waiting, so a slow, failing or hanging collector costs the relay one
integer comparison per span and never more memory than the queue. A summary
of drops and failures is logged at most once per :data:`REPORT_INTERVAL`, and
the exporter's own lines (one per failed batch and retry) are let through at
the same pace.

Configuration is the standard OpenTelemetry environment, read by the SDK:
``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``, ``_HEADERS``, ``_TIMEOUT``,
``_PROTOCOL`` (``http/protobuf``; ``grpc`` with the ``otlp-grpc`` extra),
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER(_ARG)``, ``OTEL_BSP_*``.
Langfuse (``callbacks: ["langfuse"]``) is OTLP/HTTP to
``$LANGFUSE_HOST/api/public/otel`` with Basic auth from ``LANGFUSE_PUBLIC_KEY``
and ``LANGFUSE_SECRET_KEY`` (https://langfuse.com/docs/opentelemetry/get-started).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import trio
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rtgate.config.model import TelemetrySettings
from rtgate.errors import ConfigError, scrub
from rtgate.telemetry.turns import Turn

log = logging.getLogger("rtgate.tracing")

REPORT_INTERVAL: Final = 60.0
"""Seconds between two log lines about dropped or failed spans."""
LANGFUSE_DEFAULT_HOST: Final = "https://us.cloud.langfuse.com"
"""LiteLLM's default for ``LANGFUSE_HOST`` (its ``langfuse_otel`` integration)."""
SHUTDOWN_SECONDS: Final = 5.0
"""What shutdown may spend flushing spans to the collector before giving up on them."""

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_EXPORTER_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
)


class _OnePerInterval(logging.Filter):
    """Lets one record through per ``interval`` seconds (a dead collector fails every batch)."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()  # runs on the export thread, outside trio
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


def _quiet_exporter_logs() -> None:
    for name in _EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OnePerInterval) for f in logger.filters):
            logger.addFilter(_OnePerInterval(REPORT_INTERVAL))


def langfuse_exporter_args(env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The OTLP/HTTP traces endpoint and headers for Langfuse, from its usual variables."""
    public = env.get("LANGFUSE_PUBLIC_KEY")
    secret = env.get("LANGFUSE_SECRET_KEY")
    if not public or not secret:
        raise ConfigError(
            "callbacks: langfuse needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY in the environment"
        )
    host = env.get("LANGFUSE_HOST") or LANGFUSE_DEFAULT_HOST
    if not host.startswith(("http://", "https://")):
        host = "https://" + host
    token = base64.b64encode(f"{public}:{secret}".encode()).decode()
    return f"{host.rstrip('/')}/api/public/otel/v1/traces", {"Authorization": f"Basic {token}"}


def _protocol(env: Mapping[str, str]) -> str:
    return (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def build_exporter(
    settings: TelemetrySettings, env: Mapping[str, str]
) -> list[tuple[str, SpanExporter]]:
    """The exporters ``settings`` ask for, by name (``otel``, ``langfuse``)."""
    exporters: list[tuple[str, SpanExporter]] = []
    if settings.otel:
        protocol = _protocol(env)
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(("otel", OTLPSpanExporter()))
        elif protocol == "grpc":
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                    OTLPSpanExporter as GrpcSpanExporter,
                )
            except ImportError:
                raise ConfigError(
                    "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: "
                    "pip install 'rtgate[otlp-grpc]' (or use http/protobuf, the default)"
                )
            exporters.append(("otel", GrpcSpanExporter()))
        else:
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not offered "
                "(use http/protobuf, the default, or grpc)"
            )
    if settings.langfuse:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint, headers = langfuse_exporter_args(env)
        exporters.append(("langfuse", OTLPSpanExporter(endpoint=endpoint, headers=headers)))
    return exporters


def check_environment(settings: TelemetrySettings, env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` now for what would stop traces at start-up (a clear message
    before the server starts, instead of from inside it)."""
    env = os.environ if env is None else env
    if settings.langfuse:
        langfuse_exporter_args(env)
    if settings.otel and _protocol(env) not in ("http/protobuf", "grpc"):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={_protocol(env)!r} is not offered "
            "(use http/protobuf, the default, or grpc)"
        )
    for name in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        _env_int(env, name, 1)


class _CountingExporter(SpanExporter):
    """Counts what the batch thread took and how each export went."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.taken = 0
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.taken += len(spans)
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug must not kill the batch thread
            log.exception("span exporter failed")
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _BoundedQueue(SpanProcessor):
    """The SDK's batch processor, with the spans it would drop refused first and counted.

    ``handed - exporter.taken`` is what waits in the batch queue: each counter
    is written by one thread only (the relay's, the batch thread's).
    """

    def __init__(
        self, exporter: _CountingExporter, max_queue_size: int, env: Mapping[str, str]
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        batch = min(_env_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), max_queue_size)
        self.batch = BatchSpanProcessor(
            exporter, max_queue_size=max_queue_size, max_export_batch_size=batch
        )
        self.handed = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        return self.handed - self.exporter.taken

    def on_start(self, span: SdkSpan, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self.handed - self.exporter.taken >= self.max_queue_size:
            self.dropped += 1
            return
        self.handed += 1
        self.batch.on_end(span)

    def shutdown(self) -> None:
        self.batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.batch.force_flush(timeout_millis)


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer")
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")
    return value


@attrs.define
class DropReport:
    """Decides when to log about lost spans: at most once per ``interval`` (time as ``now``)."""

    interval: float = REPORT_INTERVAL
    _last_at: float | None = None
    _reported: tuple[int, int] = (0, 0)

    def check(self, now: float, dropped: int, failed: int) -> str | None:
        """A log line when spans were lost since the last one and ``interval`` has passed."""
        new_dropped = dropped - self._reported[0]
        new_failed = failed - self._reported[1]
        if new_dropped <= 0 and new_failed <= 0:
            return None
        if self._last_at is not None and now - self._last_at < self.interval:
            return None
        self._last_at = now
        self._reported = (dropped, failed)
        return (
            f"traces: {new_dropped + new_failed} spans lost since the last report "
            f"({new_dropped} dropped with the export queue full, {new_failed} refused by or "
            f"not delivered to the collector); sessions are not affected"
        )


class Tracing:
    """The gateway's tracer: build it with :meth:`for_config`, run :meth:`run`, close with :meth:`aclose`."""

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        env: Mapping[str, str] | None = None,
        exporters: list[tuple[str, SpanExporter]] | None = None,
        worker: str = "0",
    ) -> None:
        from rtgate import __version__

        env = os.environ if env is None else env
        self.settings = settings
        max_queue = _env_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", settings.max_queue_size)
        resource = Resource.create(
            {
                "service.name": env.get("OTEL_SERVICE_NAME") or "rtgate",
                "service.version": __version__,
                "service.instance.id": f"{os.uname().nodename}:{os.getpid()}:{worker}",
            }
        )
        # The sampler comes from OTEL_TRACES_SAMPLER (default parentbased_always_on);
        # shutdown is ours (bounded), not an atexit hook that may wait for a dead collector.
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.queues: dict[str, _BoundedQueue] = {}
        for name, exporter in exporters if exporters is not None else build_exporter(settings, env):
            queue = _BoundedQueue(_CountingExporter(exporter), max_queue, env)
            self.queues[name] = queue
            self.provider.add_span_processor(queue)
        self.tracer = self.provider.get_tracer("rtgate", __version__)
        self.report = DropReport()
        _quiet_exporter_logs()
        self._closed = False

    @classmethod
    def for_config(cls, settings: TelemetrySettings, worker: str = "0") -> Tracing | None:
        """A tracer when the config turns traces on (and ``OTEL_SDK_DISABLED`` does not)."""
        if not settings.enabled:
            return None
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            log.info("traces are configured but OTEL_SDK_DISABLED=true: not exporting")
            return None
        return cls(settings, worker=worker)

    # -- counters ---------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Per exporter: ``queued``, ``exported``, ``dropped`` (queue full), ``failed``."""
        return {
            name: {
                "queued": q.queued,
                "exported": q.exporter.exported,
                "dropped": q.dropped,
                "failed": q.exporter.failed,
            }
            for name, q in self.queues.items()
        }

    def _lost(self) -> tuple[int, int]:
        qs = self.queues.values()
        return sum(q.dropped for q in qs), sum(q.exporter.failed for q in qs)

    # -- lifecycle --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Log lost spans at most once per :data:`REPORT_INTERVAL` until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(1.0)
            line = self.report.check(trio.current_time(), *self._lost())
            if line is not None:
                log.warning("%s", line)

    async def aclose(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Flush what the collector takes within ``timeout``; never wait longer."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(timeout):
            await trio.to_thread.run_sync(self.provider.shutdown, abandon_on_cancel=True)

    # -- spans --------------------------------------------------------------------

    def session(self, headers: Mapping[str, str], attributes: Mapping[str, Any]) -> SessionTrace:
        """Open the session span, continuing the client's W3C ``traceparent`` if it sent one."""
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        span = self.tracer.start_span(
            "realtime.session", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        return SessionTrace(self.tracer, span)


class SessionTrace:
    """One session's spans. Every method is a no-op cost when the session was not sampled."""

    __slots__ = ("_attempts", "_context", "_dial", "recording", "span", "tracer")

    def __init__(self, tracer: trace.Tracer, span: Span) -> None:
        self.tracer = tracer
        self.span = span
        self.recording = span.is_recording()
        self._context = trace.set_span_in_context(span)
        self._dial: Span | None = None
        self._attempts = 0

    # -- the dial (pool walk, failover) ------------------------------------------

    def dial_attempt(self, deployment: str, provider: str) -> None:
        if not self.recording:
            return
        if self._dial is None:
            self._dial = self.tracer.start_span(
                "realtime.dial", context=self._context, kind=SpanKind.CLIENT
            )
        self._attempts += 1
        self._dial.add_event(
            "rtgate.dial.attempt", {"rtgate.deployment": deployment, "rtgate.provider": provider}
        )

    def dial_failed(self, deployment: str, kind: str, error: str) -> None:
        if self._dial is not None:
            self._dial.add_event(
                "rtgate.dial.failed",
                {"rtgate.deployment": deployment, "rtgate.error.kind": kind, "rtgate.error": error},
            )

    def dial_succeeded(self, deployment: str, provider: str, *, warm: bool) -> None:
        if not self.recording:
            return
        if self._dial is None:  # a warm connection: no dial attempt was needed
            self._dial = self.tracer.start_span(
                "realtime.dial", context=self._context, kind=SpanKind.CLIENT
            )
        self._dial.set_attributes(
            {
                "rtgate.deployment": deployment,
                "rtgate.provider": provider,
                "rtgate.dial.attempts": self._attempts,
                "rtgate.dial.warm": warm,
            }
        )
        self._dial.end()
        self._dial = None

    def rejected(self, status: int, error_type: str, message: str) -> None:
        """The handshake was refused after the session span started (no deployment, limits)."""
        if self._dial is not None:
            self._dial.set_attribute("rtgate.dial.attempts", self._attempts)
            self._dial.set_status(Status(StatusCode.ERROR, message))
            self._dial.end()
            self._dial = None
        self.span.set_attributes({"http.response.status_code": status, "error.type": error_type})
        self.span.set_status(Status(StatusCode.ERROR, message))
        self.span.end()

    # -- the running session ------------------------------------------------------

    def admitted(self, attributes: Mapping[str, Any]) -> None:
        if self.recording:
            self.span.set_attributes(attributes)

    def turn(self, turn: Turn, now: float, cost_usd: float | None = None) -> None:
        """A finished response: a child span from its anchor to ``response.done``, with its
        cost when the deployment is priced."""
        if not self.recording:
            return
        wall = time.time_ns()
        start = wall - int((now - turn.anchor) * 1e9)
        attributes: dict[str, Any] = {
            "rtgate.turn.started_by": turn.started_by,
            "rtgate.time_to_response_done_seconds": turn.time_to_done,
        }
        if turn.response_id is not None:
            attributes["rtgate.response_id"] = turn.response_id
        if turn.status is not None:
            attributes["rtgate.response.status"] = turn.status
        if turn.time_to_first_audio is not None:
            attributes["rtgate.time_to_first_audio_seconds"] = turn.time_to_first_audio
        if turn.created is not None:
            attributes["rtgate.time_to_response_created_seconds"] = turn.created - turn.anchor
        if turn.function_calls:
            attributes["rtgate.function_calls"] = list(turn.function_calls)
        attributes.update(_usage_attributes(turn.usage))
        attributes.update(_cost_attributes(cost_usd))
        span = self.tracer.start_span(
            "realtime.response", context=self._context, start_time=start, attributes=attributes
        )
        if turn.status in ("failed", "incomplete"):
            span.set_status(Status(StatusCode.ERROR, turn.status))
        span.end(end_time=wall)

    def ended(
        self,
        attributes: Mapping[str, Any],
        usage: Mapping[str, int],
        error: str | None,
        cost_usd: float | None = None,
    ) -> None:
        """Teardown: close code, who closed, usage, the session's cost (None: not priced);
        ``error`` marks the span failed."""
        if self.recording:
            self.span.set_attributes(attributes)
            self.span.set_attributes(_usage_attributes(usage))
            self.span.set_attributes(_cost_attributes(cost_usd))
            for key, value in usage.items():
                self.span.set_attribute(f"rtgate.usage.{key}", value)
            if error is not None:
                self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()


def _usage_attributes(usage: Mapping[str, int]) -> dict[str, int]:
    """GenAI semantic-convention token counts (what Langfuse and trace UIs read)."""
    out: dict[str, int] = {}
    if "input_tokens" in usage:
        out["gen_ai.usage.input_tokens"] = usage["input_tokens"]
    if "output_tokens" in usage:
        out["gen_ai.usage.output_tokens"] = usage["output_tokens"]
    return out


def _cost_attributes(cost_usd: float | None) -> dict[str, float]:
    """The cost in US dollars: rtgate's name, and ``gen_ai.usage.cost``, which Langfuse reads
    as the observation's total cost (https://langfuse.com/docs/opentelemetry/get-started);
    the GenAI semantic conventions name no cost attribute yet."""
    if cost_usd is None:
        return {}
    return {"rtgate.cost_usd": cost_usd, "gen_ai.usage.cost": cost_usd}


def scrubbed(text: str, secrets: tuple[str, ...]) -> str:
    """Text for a span: no secret, bounded length."""
    return scrub(text, secrets)[:512]
