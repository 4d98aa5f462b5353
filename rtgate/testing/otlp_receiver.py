"""A local OTLP/HTTP trace receiver for tests and benchmarks: decodes what rtgate exports.

``port = await nursery.start(receiver.serve)``; point ``OTEL_EXPORTER_OTLP_ENDPOINT``
at ``receiver.base_url``. Every ``POST .../v1/traces`` is decoded with
opentelemetry-proto into :class:`ReceivedSpan` objects (name, ids, parent, kind,
attributes, events) and its headers are kept. ``mode`` makes it a bad collector:
``ok`` (200), ``error`` (500 to everything) or ``hang`` (reads the request, never
answers).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import attrs
import h11
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@attrs.define
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    start_ns: int
    end_ns: int
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


@attrs.define
class OtlpReceiver:
    mode: str = "ok"
    """``ok``, ``error`` (HTTP 500) or ``hang`` (never answers)."""
    port: int = 0
    spans: list[ReceivedSpan] = attrs.field(factory=list)
    requests: list[dict[str, str]] = attrs.field(factory=list)
    """Headers of every export request (lower-case names), with ``:path``."""
    changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(partial(self._connection), listeners)

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    async def wait_for(self, predicate: Any) -> None:
        """Wait until ``predicate(self)`` holds (callers wrap this in ``trio.fail_after``)."""
        while not predicate(self):
            self.changed = trio.Event()
            await self.changed.wait()

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read(stream, conn)
                if request is None:
                    return
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                headers[":path"] = request.target.decode()
                self.requests.append(headers)
                self.changed.set()
                if self.mode == "hang":
                    await trio.sleep_forever()
                if self.mode == "error":
                    await self._answer(stream, conn, 500, b"collector is broken")
                else:
                    self._decode(body)
                    payload = ExportTraceServiceResponse().SerializeToString()
                    await self._answer(stream, conn, 200, payload)
                self.changed.set()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _read(self, stream: trio.SocketStream, conn: h11.Connection) -> tuple[Any, bytes]:
        request = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _answer(
        self, stream: trio.SocketStream, conn: h11.Connection, status: int, body: bytes
    ) -> None:
        headers = [("Content-Type", "application/x-protobuf"), ("Content-Length", str(len(body)))]
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)

    def _decode(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes=_attributes(span.attributes),
                            events=[(e.name, _attributes(e.attributes)) for e in span.events],
                            status_code=span.status.code,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            resource=resource,
                        )
                    )


async def _serve_on(port: int) -> None:
    """Serve on a fixed port, printing the running span count after each export (for benchmarks)."""
    receiver = OtlpReceiver()
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    receiver.port = port

    async def report() -> None:
        while True:
            await receiver.wait_for(lambda r: bool(r.spans))
            print(f"spans {len(receiver.spans)}", flush=True)
            receiver.spans.clear()  # a benchmark's receiver keeps counts, not spans
            receiver.requests.clear()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report)
        await trio.serve_listeners(receiver._connection, listeners)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="A local OTLP/HTTP trace receiver")
    parser.add_argument("--port", type=int, required=True)
    trio.run(_serve_on, parser.parse_args().port)


if __name__ == "__main__":
    main()
