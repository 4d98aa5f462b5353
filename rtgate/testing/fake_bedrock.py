"""A fake Amazon Bedrock runtime for Nova Sonic sessions, on 127.0.0.1 over TLS + HTTP/2.

Behaves like the real service as far as rtgate can tell: it checks the SigV4
request signature and every event's chained signature with its own code
(independent of ``rtgate.aws.sigv4``), decodes frames with botocore's decoder,
answers 403 for bad signatures and unknown keys, sends in-stream exceptions,
respects HTTP/2 flow control both ways, and answers each user turn like Nova
Sonic: ASR text, a speculative preview, assistant audio, the final transcript,
usage, tool use, barge-in. A turn ends when audio that had speech in it turns
silent (all-zero samples) or on interactive USER text.

Everything received is recorded in :attr:`FakeBedrock.sessions` for assertions.
The TLS certificate comes from a ``trustme`` CA; point ``tls.ca_bundle`` at
:attr:`FakeBedrock.ca_bundle`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import os
import ssl
import struct
import tempfile
import uuid
from typing import Any
from urllib.parse import quote

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import orjson
import trio
import trustme
from botocore.eventstream import EventStreamBuffer, ParserError

from rtgate.aws.eventstream import encode_message

STREAMING = "STREAMING-AWS4-HMAC-SHA256-EVENTS"


@attrs.define
class FakeTurn:
    """How the fake answers one user turn."""

    transcript: str = "hello there"
    """What Nova "heard" (USER ASR text)."""
    reply: str = "Hi! How can I help?"
    """What the assistant says (speculative preview, audio, final transcript)."""
    tool: tuple[str, dict[str, Any]] | None = None
    """Ask for this tool instead of replying; ``reply`` follows the tool result."""
    exception: str | None = None
    """Send this in-stream exception (``throttlingException``...) and end the stream."""
    audio_chunks: int = 3
    chunk_interval: float = 0.0
    """Seconds between audio chunks (a slow reply can be barged in)."""
    usage_in: tuple[int, int] = (12, 3)
    """(speech, text) input tokens reported for the turn."""
    usage_out: tuple[int, int] = (40, 8)


@attrs.define
class FakeSession:
    """What one request stream carried."""

    path: str = ""
    headers: dict[str, str] = attrs.field(factory=dict)
    events: list[dict[str, Any]] = attrs.field(factory=list)
    signed_events: int = 0
    empty_frame: bool = False
    end_stream: bool = False
    errors: list[str] = attrs.field(factory=list)
    audio_bytes: int = 0

    def names(self) -> list[str]:
        return [next(iter(e["event"])) for e in self.events]


class _Stream:
    """Server-side state of one request."""

    def __init__(self, server: FakeBedrock, conn: _Conn, stream_id: int) -> None:
        self.server = server
        self.conn = conn
        self.id = stream_id
        self.session = FakeSession()
        self.buffer = EventStreamBuffer()
        self.secret = ""
        self.scope = ""
        self.prior = ""
        self.responded = False
        self.closed = False
        self.prompt = ""
        self.output_rate = 24000
        self.in_speech = False
        self.turn_index = 0
        self.speaking: trio.CancelScope | None = None
        self.pending_reply: FakeTurn | None = None
        self.completion_id = str(uuid.uuid4())
        self.completion_started = False
        self.pending_text = False


class _Conn:
    def __init__(self, transport: trio.abc.Stream) -> None:
        self.transport = transport
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.write_lock = trio.Lock()
        self.window = trio.Event()
        self.streams: dict[int, _Stream] = {}

    async def flush(self) -> None:
        if self.write_lock.locked():
            return
        async with self.write_lock:
            while data := self.h2.data_to_send():
                try:
                    await self.transport.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    async def send(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        offset = 0
        while offset < len(data):
            try:
                window = self.h2.local_flow_control_window(stream_id)
            except (h2.exceptions.StreamClosedError, KeyError):
                return
            size = min(window, self.h2.max_outbound_frame_size, len(data) - offset)
            if size <= 0:
                await self.flush()
                await self.window.wait()
                continue
            self.h2.send_data(stream_id, data[offset : offset + size])
            offset += size
        if end:
            self.h2.end_stream(stream_id)
        await self.flush()


class FakeBedrock:
    """The fake service (see module docstring). Run ``serve`` with ``nursery.start``."""

    def __init__(
        self,
        *,
        credentials: dict[str, str] | None = None,
        region: str = "us-east-1",
        turns: list[FakeTurn] | None = None,
        reject_status: int | None = None,
        reject_type: str = "ThrottlingException",
        respond_after_first_event: bool = False,
        receive_window: int = 65535,
    ) -> None:
        self.credentials = credentials or {"AKIDFAKEBEDROCK0001": "fake/secret/key"}
        self.region = region
        self.turns = list(turns or [FakeTurn()])
        self.reject_status = reject_status
        self.reject_type = reject_type
        self.respond_after_first_event = respond_after_first_event
        self.receive_window = receive_window
        self.sessions: list[FakeSession] = []
        self.port = 0
        self._ca = trustme.CA()
        cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._server_ctx)
        self._server_ctx.set_alpn_protocols(["h2"])
        fd, self.ca_bundle = tempfile.mkstemp(suffix=".pem", prefix="fake-bedrock-ca-")
        os.close(fd)
        self._ca.cert_pem.write_to_path(self.ca_bundle)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Remove the CA file."""
        try:
            os.unlink(self.ca_bundle)
        except FileNotFoundError:
            pass

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        ssl_listeners = [
            trio.SSLListener(lst, self._server_ctx, https_compatible=True) for lst in listeners
        ]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, ssl_listeners)

    # -- connection ---------------------------------------------------------------

    async def _connection(self, transport: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await transport.do_handshake()
        except trio.BrokenResourceError:
            return
        conn = _Conn(transport)
        conn.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.receive_window},
        )
        conn.h2.initiate_connection()
        await conn.flush()
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    data = await transport.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                try:
                    events = conn.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    await self._on_event(conn, event, nursery)
                await conn.flush()
                done, conn.window = conn.window, trio.Event()
                done.set()
                if isinstance(events, list) and any(
                    isinstance(e, h2.events.ConnectionTerminated) for e in events
                ):
                    break
            nursery.cancel_scope.cancel()
        await trio.aclose_forcefully(transport)

    async def _on_event(self, conn: _Conn, event: h2.events.Event, nursery: trio.Nursery) -> None:
        if isinstance(event, h2.events.RequestReceived):
            stream = _Stream(self, conn, event.stream_id)
            conn.streams[event.stream_id] = stream
            self.sessions.append(stream.session)
            headers = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in event.headers or ()
            }
            stream.session.headers = headers
            stream.session.path = headers.get(":path", "")
            await self._on_request(stream, headers)
        elif isinstance(event, h2.events.DataReceived):
            stream_or_none = conn.streams.get(event.stream_id)
            conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream_or_none is not None and event.data:
                await self._on_data(stream_or_none, event.data, nursery)
        elif isinstance(event, h2.events.StreamEnded):
            stream_or_none = conn.streams.get(event.stream_id)
            if stream_or_none is not None:
                stream_or_none.session.end_stream = True
                if not stream_or_none.session.empty_frame:
                    stream_or_none.session.errors.append(
                        "END_STREAM without the empty signed frame"
                    )
                if stream_or_none.speaking is not None:
                    stream_or_none.speaking.cancel()
                if stream_or_none.responded and not stream_or_none.closed:
                    stream_or_none.closed = True
                    await conn.send(event.stream_id, b"", end=True)

    # -- request ------------------------------------------------------------------

    async def _on_request(self, stream: _Stream, headers: dict[str, str]) -> None:
        problem, status, error_type = self._check_request(stream, headers)
        if problem:
            stream.session.errors.append(problem)
            await self._reject(stream, status, error_type, problem)
            return
        if self.reject_status is not None:
            await self._reject(stream, self.reject_status, self.reject_type, "Too many requests")
            return
        if not self.respond_after_first_event:
            await self._respond_ok(stream)

    def _check_request(self, stream: _Stream, headers: dict[str, str]) -> tuple[str, int, str]:
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/model/"):
            return f"unexpected request {headers.get(':method')} {path}", 404, "UnknownOperation"
        if not path.endswith("/invoke-with-bidirectional-stream"):
            return f"unexpected path {path}", 404, "UnknownOperation"
        if headers.get("x-amz-content-sha256") != STREAMING:
            return "x-amz-content-sha256 is not the event-stream marker", 400, "ValidationException"
        auth = headers.get("authorization", "")
        fields = dict(
            part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(",")
        )
        try:
            key_id, date, region, service, terminal = fields["Credential"].split("/")
        except (KeyError, ValueError):
            return "malformed Authorization header", 403, "IncompleteSignatureException"
        secret = self.credentials.get(key_id)
        if secret is None:
            return "unknown access key", 403, "UnrecognizedClientException"
        if (region, service, terminal) != (self.region, "bedrock", "aws4_request"):
            return f"bad credential scope {region}/{service}", 403, "InvalidSignatureException"
        signed = fields.get("SignedHeaders", "").split(";")
        amz_date = headers.get("x-amz-date", "")
        if "host" not in signed or "x-amz-date" not in signed or not amz_date.startswith(date):
            return "host and x-amz-date must be signed", 403, "InvalidSignatureException"
        values = dict(headers)
        values["host"] = headers.get(":authority", "")
        canonical = "\n".join(
            [
                "POST",
                quote(path, safe="/~"),  # every service but S3 encodes the path again
                "",
                "".join(f"{name}:{' '.join(values.get(name, '').split())}\n" for name in signed),
                ";".join(signed),
                STREAMING,
            ]
        )
        scope = f"{date}/{region}/bedrock/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = _derive(secret, date, region)
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return "request signature does not match", 403, "InvalidSignatureException"
        stream.secret, stream.scope, stream.prior = secret, scope, expected
        return "", 200, ""

    async def _reject(self, stream: _Stream, status: int, error_type: str, message: str) -> None:
        conn = stream.conn
        stream.responded = stream.closed = True
        conn.h2.send_headers(
            stream.id,
            [
                (":status", str(status)),
                ("content-type", "application/json"),
                ("x-amzn-errortype", f"{error_type}:http://internal.amazon.com/coral/"),
            ],
        )
        await conn.send(stream.id, orjson.dumps({"message": message}), end=True)

    async def _respond_ok(self, stream: _Stream) -> None:
        if stream.responded:
            return
        stream.responded = True
        stream.conn.h2.send_headers(
            stream.id,
            [
                (":status", "200"),
                ("content-type", "application/vnd.amazon.eventstream"),
                ("x-amzn-requestid", str(uuid.uuid4())),
            ],
        )
        await stream.conn.flush()

    # -- events in --------------------------------------------------------------------

    async def _on_data(self, stream: _Stream, data: bytes, nursery: trio.Nursery) -> None:
        stream.buffer.add_data(data)
        try:
            envelopes = list(stream.buffer)
        except ParserError as exc:
            stream.session.errors.append(f"undecodable frame: {exc}")
            return
        for envelope in envelopes:
            if stream.closed:
                return
            problem = self._verify_envelope(stream, envelope.headers, envelope.payload)
            if problem:
                stream.session.errors.append(problem)
                await self._send_error(stream, "InvalidSignatureException", problem)
                return
            if not envelope.payload:
                stream.session.empty_frame = True
                continue
            if stream.session.empty_frame:
                stream.session.errors.append("event after the empty signed frame")
            inner = EventStreamBuffer()
            inner.add_data(envelope.payload)
            for message in inner:
                headers = message.headers
                if (headers.get(":event-type"), headers.get(":content-type")) != (
                    "chunk",
                    "application/json",
                ):
                    stream.session.errors.append(f"unexpected inner headers {headers}")
                    continue
                event = orjson.loads(base64.b64decode(orjson.loads(message.payload)["bytes"]))
                await self._on_nova(stream, event, nursery)

    def _verify_envelope(self, stream: _Stream, headers: dict[str, Any], payload: bytes) -> str:
        date_ms = headers.get(":date")
        signature = headers.get(":chunk-signature")
        if not isinstance(date_ms, int) or not isinstance(signature, bytes):
            return "event without :date and :chunk-signature"
        seconds = date_ms // 1000
        stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        date_header = b"\x05:date\x08" + struct.pack(">q", date_ms)
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                stamp,
                stream.scope,
                stream.prior,
                hashlib.sha256(date_header).hexdigest(),
                hashlib.sha256(payload).hexdigest(),
            ]
        )
        key = _derive(stream.secret, stream.scope[:8], self.region)
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            return f"event signature {stream.session.signed_events + 1} does not match"
        stream.prior = expected.hex()
        stream.session.signed_events += 1
        return ""

    async def _on_nova(self, stream: _Stream, event: dict[str, Any], nursery: trio.Nursery) -> None:
        session = stream.session
        session.events.append(event)
        ((name, body),) = event["event"].items()
        position = len(session.events)
        if position == 1 and name != "sessionStart":
            session.errors.append(f"first event is {name}, not sessionStart")
        if position == 2 and name != "promptStart":
            session.errors.append(f"second event is {name}, not promptStart")
        if self.respond_after_first_event:
            await self._respond_ok(stream)
        if name == "promptStart":
            stream.prompt = body.get("promptName", "")
            config = body.get("audioOutputConfiguration") or {}
            stream.output_rate = int(config.get("sampleRateHertz", 24000))
        elif name == "audioInput":
            audio = base64.b64decode(body.get("content", ""))
            session.audio_bytes += len(audio)
            speech = any(audio)
            if speech and stream.speaking is not None:
                stream.speaking.cancel()
                stream.speaking = None
                await self._interrupted(stream)
            if speech:
                stream.in_speech = True
            elif stream.in_speech:
                stream.in_speech = False
                self._start_turn(stream, nursery)
        elif name == "contentStart" and body.get("type") == "TEXT" and body.get("interactive"):
            stream.pending_text = True
        elif name == "contentEnd" and stream.pending_text:
            stream.pending_text = False
            self._start_turn(stream, nursery)
        elif name == "toolResult" and stream.pending_reply is not None:
            turn, stream.pending_reply = stream.pending_reply, None
            nursery.start_soon(self._reply, stream, turn)
        elif name == "sessionEnd":
            await self._send(stream, "completionEnd", {"stopReason": "END_TURN"})

    # -- events out -------------------------------------------------------------------

    def _start_turn(self, stream: _Stream, nursery: trio.Nursery) -> None:
        turn = self.turns[min(stream.turn_index, len(self.turns) - 1)]
        stream.turn_index += 1
        nursery.start_soon(self._answer, stream, turn)

    async def _send(self, stream: _Stream, name: str, body: dict[str, Any]) -> None:
        if stream.closed:
            return
        full = {
            "sessionId": "fake-session",
            "promptName": stream.prompt,
            "completionId": stream.completion_id,
            **body,
        }
        payload = orjson.dumps({"event": {name: full}})
        message = encode_message(
            {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"},
            b'{"bytes":"' + base64.b64encode(payload) + b'"}',
        )
        await stream.conn.send(stream.id, message)

    async def _content(
        self,
        stream: _Stream,
        kind: str,
        role: str,
        stage: str | None,
        body: list[tuple[str, dict[str, Any]]],
        stop: str,
    ) -> None:
        content_id = str(uuid.uuid4())
        start: dict[str, Any] = {"contentId": content_id, "type": kind, "role": role}
        if stage:
            start["additionalModelFields"] = orjson.dumps({"generationStage": stage}).decode()
        await self._send(stream, "contentStart", start)
        for name, fields in body:
            await self._send(stream, name, {"contentId": content_id, "role": role, **fields})
        await self._send(
            stream, "contentEnd", {"contentId": content_id, "type": kind, "stopReason": stop}
        )

    async def _usage(self, stream: _Stream, inp: tuple[int, int], outp: tuple[int, int]) -> None:
        delta = {
            "input": {"speechTokens": inp[0], "textTokens": inp[1]},
            "output": {"speechTokens": outp[0], "textTokens": outp[1]},
        }
        await self._send(stream, "usageEvent", {"details": {"delta": delta}})

    async def _answer(self, stream: _Stream, turn: FakeTurn) -> None:
        if not stream.completion_started:
            stream.completion_started = True
            await self._send(stream, "completionStart", {})
        await self._content(
            stream,
            "TEXT",
            "USER",
            "FINAL",
            [("textOutput", {"content": turn.transcript})],
            "END_TURN",
        )
        await self._usage(stream, turn.usage_in, (0, 0))
        if turn.exception is not None:
            await self._exception(stream, turn.exception, "the fake was told to fail")
            return
        if turn.tool is not None:
            name, args = turn.tool
            content_id = str(uuid.uuid4())
            await self._send(
                stream, "contentStart", {"contentId": content_id, "type": "TOOL", "role": "TOOL"}
            )
            await self._send(
                stream,
                "toolUse",
                {
                    "contentId": content_id,
                    "toolName": name,
                    "toolUseId": str(uuid.uuid4()),
                    "content": orjson.dumps(args).decode(),
                },
            )
            await self._send(
                stream,
                "contentEnd",
                {"contentId": content_id, "type": "TOOL", "stopReason": "TOOL_USE"},
            )
            stream.pending_reply = turn
            return
        await self._reply(stream, turn)

    async def _reply(self, stream: _Stream, turn: FakeTurn) -> None:
        with trio.CancelScope() as scope:
            stream.speaking = scope
            await self._content(
                stream,
                "TEXT",
                "ASSISTANT",
                "SPECULATIVE",
                [("textOutput", {"content": turn.reply})],
                "PARTIAL_TURN",
            )
            audio_id = str(uuid.uuid4())
            await self._send(
                stream,
                "contentStart",
                {"contentId": audio_id, "type": "AUDIO", "role": "ASSISTANT"},
            )
            for index in range(turn.audio_chunks):
                if turn.chunk_interval:
                    await trio.sleep(turn.chunk_interval)
                pcm = _tone(stream.output_rate, 0.02, index)
                await self._send(
                    stream,
                    "audioOutput",
                    {"contentId": audio_id, "content": base64.b64encode(pcm).decode()},
                )
            await self._send(
                stream,
                "contentEnd",
                {"contentId": audio_id, "type": "AUDIO", "stopReason": "END_TURN"},
            )
            await self._content(
                stream,
                "TEXT",
                "ASSISTANT",
                "FINAL",
                [("textOutput", {"content": turn.reply})],
                "END_TURN",
            )
            await self._usage(stream, (0, 0), turn.usage_out)
        stream.speaking = None

    async def _interrupted(self, stream: _Stream) -> None:
        await self._content(
            stream,
            "TEXT",
            "ASSISTANT",
            "FINAL",
            [("textOutput", {"content": '{ "interrupted" : true }'})],
            "INTERRUPTED",
        )

    async def _exception(self, stream: _Stream, exception_type: str, message: str) -> None:
        if stream.closed:
            return
        stream.closed = True
        frame = encode_message(
            {
                ":message-type": "exception",
                ":exception-type": exception_type,
                ":content-type": "application/json",
            },
            orjson.dumps({"message": message}),
        )
        await stream.conn.send(stream.id, frame, end=True)

    async def _send_error(self, stream: _Stream, code: str, message: str) -> None:
        if stream.closed:
            return
        await self._respond_ok(stream)
        stream.closed = True
        frame = encode_message(
            {":message-type": "error", ":error-code": code, ":error-message": message}, b""
        )
        await stream.conn.send(stream.id, frame, end=True)


def _derive(secret: str, date: str, region: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _tone(rate: int, seconds: float, index: int) -> bytes:
    count = int(rate * seconds)
    samples = (
        int(8000 * math.sin(2 * math.pi * 440 * (i + index * count) / rate)) for i in range(count)
    )
    return struct.pack(f"<{count}h", *samples)
