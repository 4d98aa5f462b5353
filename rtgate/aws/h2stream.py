"""A full-duplex HTTP/2 request over trio, and the Bedrock event-stream link on top of it.

Two layers, one module:

* :class:`H2Stream` runs the ``h2`` state machine over TLS
  (:class:`rtgate.net.tls.TlsSocketStream`, ALPN ``h2``) for exactly one
  request whose body and response stream at the same time (httpx cannot: it
  sends the whole body before reading). Flow
  control both ways: received DATA is acknowledged only when the caller comes
  back for more (so a slow consumer slows Bedrock down, with memory bounded
  by the receive window), and sending waits for window.
* :class:`BedrockLink` implements :class:`rtgate.providers.base.UpstreamLink`:
  each Nova JSON event becomes an event-stream ``chunk`` message
  (``{"bytes": base64(json)}``) wrapped in a signed envelope; received
  ``chunk`` messages become Nova JSON ``bytes`` again, and in-stream
  exceptions become :class:`rtgate.errors.UpstreamClosed`.

Concurrency: one task may sit in :meth:`H2Stream.read` while another writes.
Reading never waits for the write lock (a writer stuck on a full TCP buffer
must not stop us reading, or both peers could block on each other); whoever
holds the write lock drains everything ``h2`` has queued before releasing it.
A writer short of window reads the socket itself when no reader is active.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import socket
import ssl
from collections.abc import Sequence
from typing import Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import orjson
import trio

from rtgate.aws.eventstream import Decoder, EventStreamError, encode_headers, encode_raw
from rtgate.aws.sigv4 import EventSigner
from rtgate.errors import UpstreamClosed, UpstreamConnectError, UpstreamRejected, scrub
from rtgate.net.tls import TlsSocketStream
from rtgate.wire import Binary, Frame

RECEIVE_WINDOW: Final = 1024 * 1024
"""Bytes Bedrock may send ahead of what rtgate has consumed (per stream and connection)."""
_READ_SIZE: Final = 65536
_MAX_ERROR_BODY: Final = 64 * 1024


class StreamEnded(Exception):
    """The peer ended its side of the stream cleanly (END_STREAM)."""


class H2Stream:
    """One client-initiated HTTP/2 stream over its own TLS connection (see module docstring)."""

    def __init__(self, transport: trio.abc.Stream, conn: h2.connection.H2Connection) -> None:
        self._transport = transport
        self._conn = conn
        self._stream_id = 0
        self._read_lock = trio.Lock()
        self._write_lock = trio.Lock()
        self._state_changed = trio.Event()
        self._inbound: list[bytes] = []
        self._inbound_flow = 0
        self._to_acknowledge = 0
        self._unsent = 0
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self._ended = False
        self._error: UpstreamClosed | None = None
        self._local_ended = False

    # -- opening ------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        headers: Sequence[tuple[str, str]],
        receive_window: int = RECEIVE_WINDOW,
    ) -> H2Stream:
        """Dial, negotiate ``h2``, send the request headers (not END_STREAM).

        Raises :class:`UpstreamConnectError` with kind ``dns``, ``refused`` or ``tls``.
        """
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except socket.gaierror as exc:
            raise UpstreamConnectError(f"cannot resolve {host}: {exc.strerror}", kind="dns")
        except OSError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {host}:{port}: {exc.strerror or errno.errorcode.get(exc.errno or 0, exc)}",
                kind="refused",
            )
        try:
            tls = await TlsSocketStream.wrap(tcp, ssl_context, server_hostname=host)
        except (ssl.SSLError, trio.BrokenResourceError) as exc:
            cause = exc.__cause__ or exc
            raise UpstreamConnectError(f"TLS handshake with {host} failed: {cause}", kind="tls")
        if tls.selected_alpn_protocol() != "h2":
            await trio.aclose_forcefully(tls)
            raise UpstreamConnectError(f"{host} did not negotiate HTTP/2 (ALPN h2)", kind="tls")
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        conn = h2.connection.H2Connection(config=config)
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: receive_window,
            },
        )
        conn.initiate_connection()
        conn.increment_flow_control_window(receive_window - 65535)
        stream = cls(tls, conn)
        stream._stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream._stream_id, list(headers), end_stream=False)
        try:
            await stream._flush()
        except UpstreamClosed as exc:
            await trio.aclose_forcefully(tls)
            raise UpstreamConnectError(f"connection to {host} lost: {exc.reason}", kind="refused")
        return stream

    async def wait_response(self) -> int:
        """Read until the response headers arrive; the HTTP status."""
        while self.status is None:
            self._raise_if_done()
            async with self._read_lock:
                if self.status is None:
                    await self._pump()
        return self.status

    async def read_body(self, limit: int = _MAX_ERROR_BODY) -> bytes:
        """The rest of a (short, error) response body, up to ``limit`` bytes."""
        body = b""
        while len(body) < limit:
            try:
                body += b"".join(await self.read())
            except (StreamEnded, UpstreamClosed):
                break
        return body[:limit]

    # -- reading ------------------------------------------------------------------

    async def read(self) -> list[bytes]:
        """Response body chunks from (at least) one socket read.

        Raises :class:`StreamEnded` once the peer ended the stream, and
        :class:`UpstreamClosed` on reset or lost connection. Calling again
        tells the peer the previous chunks were consumed (window update).
        """
        if self._to_acknowledge:
            acknowledged, self._to_acknowledge = self._to_acknowledge, 0
            self._conn.acknowledge_received_data(acknowledged, self._stream_id)
            await self._flush()
        while not self._inbound:
            self._raise_if_done()
            async with self._read_lock:
                if not self._inbound:
                    await self._pump()
        chunks, self._inbound = self._inbound, []
        self._to_acknowledge, self._inbound_flow = self._inbound_flow, 0
        return chunks

    def _raise_if_done(self) -> None:
        if self._error is not None:
            raise self._error
        if self._ended:
            raise StreamEnded()

    async def _pump(self) -> None:
        """One socket read through ``h2``; wakes writers waiting for window."""
        try:
            data = await self._transport.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            data = b""
            self._fail(1006, f"connection lost: {exc.__cause__ or exc}")
        if not data:
            self._fail(1006, "connection closed by the server")
        else:
            try:
                events = self._conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                self._fail(1002, f"HTTP/2 protocol error: {exc}")
                events = []
            for event in events:
                self._on_event(event)
            await self._flush()
        changed, self._state_changed = self._state_changed, trio.Event()
        changed.set()

    def _on_event(self, event: h2.events.Event) -> None:
        sid = self._stream_id
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
            for name, value in event.headers or ():
                key = name.decode() if isinstance(name, bytes) else name
                text = value.decode("latin-1") if isinstance(value, bytes) else value
                if key == ":status":
                    self.status = int(text)
                else:
                    self.response_headers[key] = text
        elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
            if event.data:
                self._inbound.append(event.data)
            flow = event.flow_controlled_length or 0
            if event.data:
                self._inbound_flow += flow
            elif flow:
                self._conn.acknowledge_received_data(flow, sid)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
            self._ended = True
        elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
            self._fail(1011, f"stream reset by the server (HTTP/2 error {event.error_code})")
        elif isinstance(event, h2.events.ConnectionTerminated) and (
            event.last_stream_id is None or event.last_stream_id < sid or event.error_code
        ):
            self._fail(1011, f"connection terminated by the server (GOAWAY {event.error_code})")

    def _fail(self, code: int, reason: str) -> None:
        if self._error is None and not self._ended:
            self._error = UpstreamClosed(code, reason)

    # -- writing ------------------------------------------------------------------

    async def write(self, data: bytes, *, end: bool = False) -> None:
        """Send ``data`` as DATA frames, waiting for flow-control window as needed."""
        conn, sid = self._conn, self._stream_id
        offset, size = 0, len(data)
        self._unsent = size
        try:
            while offset < size:
                self._raise_if_broken()
                try:
                    window = conn.local_flow_control_window(sid)
                except h2.exceptions.StreamClosedError:
                    raise UpstreamClosed(1011, "the stream is closed")
                chunk = min(window, conn.max_outbound_frame_size, size - offset)
                if chunk <= 0:
                    await self._flush()
                    await self._wait_for_window()
                    continue
                conn.send_data(sid, data[offset : offset + chunk])
                offset += chunk
                self._unsent = size - offset
            if end:
                conn.end_stream(sid)
                self._local_ended = True
            await self._flush()
        finally:
            self._unsent = 0

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    async def _wait_for_window(self) -> None:
        if self._read_lock.locked():
            await self._state_changed.wait()
            return
        async with self._read_lock:
            await self._pump()

    async def _flush(self) -> None:
        if self._write_lock.locked():
            return  # the holder sends everything queued before it lets go
        async with self._write_lock:
            while data := self._conn.data_to_send():
                try:
                    await self._transport.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._fail(1006, f"connection lost: {exc.__cause__ or exc}")
                    raise UpstreamClosed(1006, "connection lost")

    async def ping(self) -> None:
        self._raise_if_broken()
        self._conn.ping(b"rtgate\x00\x00")
        await self._flush()

    def pending_bytes(self) -> int:
        return self._unsent

    @property
    def can_send(self) -> bool:
        return not self._local_ended and self._error is None

    async def aclose(self) -> None:
        """GOAWAY and close the TLS connection; bounded, never raises."""
        with trio.move_on_after(1.0) as scope:
            try:
                self._conn.close_connection()
                await self._flush()
                await self._transport.aclose()
            except (UpstreamClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except h2.exceptions.ProtocolError:
                pass
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self._transport)


# -- Bedrock event stream ---------------------------------------------------------

_CHUNK_HEADERS: Final = encode_headers(
    ((":message-type", "event"), (":event-type", "chunk"), (":content-type", "application/json"))
)

# In-stream exception -> close code. Throttling and unavailability are "try again later".
_EXCEPTION_CODES: Final = {
    "throttlingException": 1013,
    "serviceUnavailableException": 1013,
    "validationException": 1008,
}


def exception_close(exception_type: str) -> tuple[int, str]:
    """Close code and error type name (``ThrottlingException``) for an in-stream exception."""
    code = _EXCEPTION_CODES.get(exception_type, 1011)
    name = exception_type[:1].upper() + exception_type[1:] if exception_type else "UnknownError"
    return code, name


def encode_chunk(nova_event: bytes) -> bytes:
    """The unsigned event-stream message carrying one Nova JSON event."""
    payload = b'{"bytes":"' + base64.b64encode(nova_event) + b'"}'
    return encode_raw(_CHUNK_HEADERS, payload)


_AUDIO_INPUT_PREFIX: Final = b'{"event":{"audioInput"'


class NovaCloseGuard:
    """Remembers which Nova prompt and contents are open, from the events sent.

    Nova asks for ``contentEnd``, ``promptEnd`` and ``sessionEnd`` before the
    stream ends ("skipping any of these closing events can result in
    incomplete conversations or orphaned resources", NOVA-IO). The translator
    sends them when the client leaves; when the session ends any other way
    (limits, drain, errors) the link sends whatever is still missing.
    Audio chunks, the bulk of the traffic, are recognised by prefix and not parsed.
    """

    def __init__(self) -> None:
        self.session_started = False
        self.session_ended = False
        self.prompt: str | None = None
        self.open_contents: list[str] = []

    def observe(self, frame: bytes) -> None:
        if frame.startswith(_AUDIO_INPUT_PREFIX):
            return
        try:
            event = orjson.loads(frame).get("event")
            ((name, body),) = event.items()
        except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError):
            return
        if not isinstance(body, dict):
            return
        if name == "sessionStart":
            self.session_started = True
        elif name == "promptStart":
            self.prompt = str(body.get("promptName", ""))
        elif name == "contentStart":
            self.open_contents.append(str(body.get("contentName", "")))
        elif name == "contentEnd":
            name_ = str(body.get("contentName", ""))
            if name_ in self.open_contents:
                self.open_contents.remove(name_)
        elif name == "promptEnd":
            self.prompt = None
            self.open_contents.clear()
        elif name == "sessionEnd":
            self.session_ended = True

    def closing_events(self) -> list[bytes]:
        if not self.session_started or self.session_ended:
            return []
        events: list[bytes] = []
        if self.prompt is not None:
            for content in self.open_contents:
                events.append(
                    orjson.dumps(
                        {
                            "event": {
                                "contentEnd": {"promptName": self.prompt, "contentName": content}
                            }
                        }
                    )
                )
            events.append(orjson.dumps({"event": {"promptEnd": {"promptName": self.prompt}}}))
        events.append(b'{"event":{"sessionEnd":{}}}')
        for event in events:
            self.observe(event)
        return events


class BedrockLink:
    """``UpstreamLink`` over an open :class:`H2Stream` whose response is 200."""

    first_frames: Sequence[Frame] = ()

    def __init__(
        self,
        stream: H2Stream,
        signer: EventSigner,
        *,
        secrets: tuple[str, ...] = (),
        close_grace: float = 2.0,
    ) -> None:
        self._stream = stream
        self._signer = signer
        self._decoder = Decoder()
        self._secrets = secrets
        self._send_lock = trio.Lock()
        self._pending_error: UpstreamClosed | None = None
        self._closed = False
        self._close_grace = close_grace
        self._guard = NovaCloseGuard()

    async def receive(self) -> list[Frame]:
        while True:
            if self._pending_error is not None:
                raise self._pending_error
            try:
                chunks = await self._stream.read()
            except StreamEnded:
                raise UpstreamClosed(1000, "Bedrock ended the stream")
            status = self._stream.status
            if status is not None and status != 200:
                body = b"".join(chunks) + await self._stream.read_body()
                self._pending_error = late_rejection(self._stream, status, body, self._secrets)
                continue
            frames: list[Frame] = []
            for chunk in chunks:
                try:
                    messages = self._decoder.feed(chunk)
                except EventStreamError as exc:
                    self._pending_error = UpstreamClosed(1011, f"bad event-stream data: {exc}")
                    break
                for message in messages:
                    frame = self._unwrap(message.headers, message.payload)
                    if frame is not None:
                        frames.append(frame)
                    if self._pending_error is not None:
                        break
                if self._pending_error is not None:
                    break
            if frames:
                return frames

    def _unwrap(self, headers: object, payload: bytes) -> bytes | None:
        assert isinstance(headers, dict)
        kind = headers.get(":message-type")
        if kind == "event":
            if headers.get(":event-type") != "chunk":
                return None  # an event this client does not model (e.g. initial-response)
            try:
                body = orjson.loads(payload)
                return base64.b64decode(body["bytes"], validate=True)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self._pending_error = UpstreamClosed(1011, "malformed chunk event from Bedrock")
                return None
        if kind == "exception":
            exception_type = str(headers.get(":exception-type", ""))
            message = _message_of(payload)
        else:
            exception_type = str(headers.get(":error-code", "unknownError"))
            message = str(headers.get(":error-message", ""))
        code, name = exception_close(exception_type)
        self._pending_error = UpstreamClosed(
            code, scrub(message, self._secrets)[:500], error_type=name
        )
        return None

    async def send(self, frames: Sequence[Frame]) -> None:
        if not frames:
            return
        async with self._send_lock:
            if self._signer.finished or not self._stream.can_send:
                raise UpstreamClosed(1011, "the Bedrock request stream is already ended")
            await self._write_events([f.data if isinstance(f, Binary) else f for f in frames])

    async def _write_events(self, events: list[bytes], *, end: bool = False) -> None:
        now = dt.datetime.now(dt.UTC)
        sign, observe = self._signer.sign, self._guard.observe
        parts = []
        for event in events:
            observe(event)
            parts.append(sign(encode_chunk(event), now))
        if end:
            parts.append(self._signer.sign_empty(now))
        await self._stream.write(b"".join(parts), end=end)

    async def ping(self) -> None:
        try:
            await self._stream.ping()
        except UpstreamClosed:
            pass

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """End the request stream (closing Nova events still missing, the empty signed
        frame, END_STREAM), give Bedrock a moment to finish, close the connection."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(self._close_grace):
            try:
                async with self._send_lock:
                    if not self._signer.finished and self._stream.can_send:
                        await self._write_events(self._guard.closing_events(), end=True)
                while True:
                    await self._stream.read()
            except (StreamEnded, UpstreamClosed):
                pass
        await self._stream.aclose()

    async def abandon(self, code: int = 1000, reason: str = "") -> None:
        """Close while another task may be reading: no closing events and no read, so the
        connection just goes (Bedrock sessions are not reconnected; this keeps the seam)."""
        if self._closed:
            return
        self._closed = True
        await self._stream.aclose()

    def pending_bytes(self) -> int:
        return self._stream.pending_bytes()


def _message_of(payload: bytes) -> str:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload[:500].decode("utf-8", "replace")
    if isinstance(body, dict):
        for key in ("message", "Message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return ""


def _error_text(stream: H2Stream, body: bytes, secrets: tuple[str, ...]) -> tuple[str, str]:
    error_type = stream.response_headers.get("x-amzn-errortype", "").split(":")[0]
    text = scrub(f"{error_type}: {_message_of(body)}".strip(": "), secrets)[:500]
    return error_type, text


def late_rejection(
    stream: H2Stream, status: int, body: bytes, secrets: tuple[str, ...]
) -> UpstreamClosed:
    """A non-200 status that arrived after ``connect`` returned, as a session end."""
    error_type, text = _error_text(stream, body, secrets)
    if status == 429:
        code = 1013
    elif 400 <= status < 500:
        code = 1008
    else:
        code = 1011
    return UpstreamClosed(code, text or f"HTTP {status}", error_type=error_type or f"HTTP{status}")


async def reject_from_response(
    stream: H2Stream, status: int, secrets: tuple[str, ...]
) -> UpstreamRejected:
    """The error for a non-200 answer: status, AWS error type and message (scrubbed)."""
    body = await stream.read_body()
    _, text = _error_text(stream, body, secrets)
    retry_after: float | None = None
    raw_retry = stream.response_headers.get("retry-after")
    if raw_retry:
        try:
            retry_after = float(raw_retry)
        except ValueError:
            retry_after = None
    rejected = UpstreamRejected(status, text, retry_after=retry_after)
    if text:
        rejected.message = f"{rejected.message}: {text}"
    return rejected
