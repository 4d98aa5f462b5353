"""A fake Gemini Live server (AI Studio or Vertex flavour) and a fake Google token endpoint.

Both listen on 127.0.0.1 and behave like the real services where rtgate
depends on it: exactly one ``setup`` then ``setupComplete``; a second setup is
closed with 1007; replies arrive as *binary* frames holding JSON; audio turns
are echoed back as model audio with transcriptions, ``generationComplete``,
``turnComplete`` and ``usageMetadata`` (Vertex spells it ``candidates*``);
asking about the weather yields a ``toolCall``; resumption handles are issued
after each turn and honoured on a new connection; ``goAway`` can be sent after
a number of turns, after which the connection is ended when its time is up.
The token endpoint checks the RS256 JWT-bearer assertion like Google's does.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from functools import partial
from typing import Any

import attrs
import h11
import orjson
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

STUDIO_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
VERTEX_PATH = "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"


@attrs.define
class FakeGeminiServer:
    """Start with ``port = await nursery.start(server.serve)``; ``base_url`` is the api_base."""

    api_key: str = "AIzaFakeStudioKey0000000000"
    flavour: str = "studio"
    """``studio`` (``x-goog-api-key``) or ``vertex`` (``Authorization: Bearer`` from ``tokens``)."""
    tokens: list[str] = attrs.field(factory=list)
    """Bearer tokens the ``vertex`` flavour accepts (pass a token endpoint's ``issued``)."""
    goaway_after_turns: int | None = None
    close_on_message: tuple[int, str] | None = None
    """Close with this code and reason when the next message after the setup arrives."""
    goaway_time_left: float = 5.0
    chunk_bytes: int = 4800
    port: int = 0
    dials: int = 0
    setups: list[dict[str, Any]] = attrs.field(factory=list)
    received: list[list[dict[str, Any]]] = attrs.field(factory=list)
    """Every client message, per connection."""
    resumed_with: list[str | None] = attrs.field(factory=list)
    close_codes: list[int] = attrs.field(factory=list)
    _handles: dict[str, int] = attrs.field(factory=dict)
    _calls: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(
                partial(serve_websocket, self._handle, "127.0.0.1", 0, ssl_context=None)
            )
            self.port = listener.port
            task_status.started(self.port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: WebSocketRequest) -> None:
        self.dials += 1
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        expected = STUDIO_PATH if self.flavour == "studio" else VERTEX_PATH
        if request.path.split("?")[0] != expected:
            await request.reject(404, body=b"not found")
            return
        if "key=" in request.path:
            await request.reject(400, body=b"keys belong in headers")
            return
        if self.flavour == "studio":
            authorised = headers.get("x-goog-api-key") == self.api_key
        else:
            bearer = headers.get("authorization", "")
            authorised = bearer.startswith("Bearer ") and bearer[len("Bearer ") :] in self.tokens
        if not authorised:
            await request.reject(401, body=b'{"error":{"code":401,"status":"UNAUTHENTICATED"}}')
            return
        ws = await request.accept()
        log: list[dict[str, Any]] = []
        self.received.append(log)
        await _Session(self, ws, log).run()

    def _new_handle(self, turns: int) -> str:
        handle = f"handle-{len(self._handles) + 1}"
        self._handles[handle] = turns
        return handle

    def _next_call_id(self) -> str:
        self._calls += 1
        return f"fc_{self._calls}"


class _Session:
    def __init__(
        self, server: FakeGeminiServer, ws: WebSocketConnection, log: list[dict[str, Any]]
    ) -> None:
        self.server = server
        self.ws = ws
        self.log = log
        self.setup: dict[str, Any] | None = None
        self.audio = bytearray()
        self.turns = 0
        self.texts: list[str] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(orjson.dumps(message))  # bytes: a binary frame, as Gemini does

    async def close(self, code: int, reason: str) -> None:
        self.server.close_codes.append(code)
        await self.ws.aclose(code, reason)

    async def run(self) -> None:
        scope = trio.CancelScope()
        with scope:
            try:
                while True:
                    raw = await self.ws.get_message()
                    message = orjson.loads(raw)
                    self.log.append(message)
                    if not await self.dispatch(message, scope):
                        return
            except ConnectionClosed:
                return
        if scope.cancelled_caught:
            await self.close(1011, "The service is currently unavailable (goAway time elapsed)")

    async def dispatch(self, message: dict[str, Any], scope: trio.CancelScope) -> bool:
        if self.setup is None:
            setup = message.get("setup")
            if not isinstance(setup, dict):
                await self.close(1007, "Request contains an invalid argument.")
                return False
            handle = (setup.get("sessionResumption") or {}).get("handle")
            if handle is not None and handle not in self.server._handles:
                await self.close(1008, "Invalid session resumption handle")
                return False
            self.turns = self.server._handles.get(handle, 0) if handle else 0
            self.server.resumed_with.append(handle)
            self.setup = setup
            self.server.setups.append(setup)
            await self.send({"setupComplete": {}})
            return True
        if self.server.close_on_message is not None:
            code, reason = self.server.close_on_message
            self.server.close_on_message = None
            await self.close(code, reason)
            return False
        if "setup" in message:
            await self.close(1007, "Request contains an invalid argument.")
            return False
        realtime = message.get("realtimeInput")
        if isinstance(realtime, dict):
            blob = realtime.get("audio")
            if isinstance(blob, dict):
                if not str(blob.get("mimeType", "")).startswith("audio/pcm;rate="):
                    await self.close(1007, "Unsupported audio mime type")
                    return False
                self.audio += base64.b64decode(blob["data"])
            if realtime.get("activityEnd") is not None or realtime.get("audioStreamEnd"):
                await self.reply(scope)
            return True
        content = message.get("clientContent")
        if isinstance(content, dict):
            for turn in content.get("turns") or []:
                self.texts += [p["text"] for p in turn.get("parts", []) if "text" in p]
            if content.get("turnComplete"):
                if any("weather" in t for t in self.texts):
                    self.texts = []
                    name = self._first_function() or "get_weather"
                    call = {
                        "id": self.server._next_call_id(),
                        "name": name,
                        "args": {"city": "Oslo"},
                    }
                    await self.send({"toolCall": {"functionCalls": [call]}})
                    return True
                await self.reply(scope, spoken=" ".join(self.texts) or "hello")
                self.texts = []
            return True
        tool = message.get("toolResponse")
        if isinstance(tool, dict):
            answer = tool["functionResponses"][0]["response"]
            await self.reply(scope, spoken=f"The weather is {json.dumps(answer, sort_keys=True)}")
            return True
        await self.close(1007, "Unknown message")
        return False

    def _first_function(self) -> str | None:
        assert self.setup is not None
        for tool in self.setup.get("tools") or []:
            for declaration in tool.get("functionDeclarations") or []:
                return str(declaration["name"])
        return None

    async def reply(self, scope: trio.CancelScope, spoken: str | None = None) -> None:
        assert self.setup is not None
        heard, self.audio = bytes(self.audio), bytearray()
        if heard and "inputAudioTranscription" in self.setup:
            await self.send(
                {"serverContent": {"inputTranscription": {"text": f"{len(heard)} bytes"}}}
            )
        answer = heard or bytes(960)
        text_mode = self.setup["generationConfig"].get("responseModalities") == ["TEXT"]
        if text_mode:
            await self.send(
                {"serverContent": {"modelTurn": {"parts": [{"text": spoken or "echo"}]}}}
            )
        else:
            step = self.server.chunk_bytes
            for start in range(0, len(answer), step):
                blob = {
                    "mimeType": "audio/pcm;rate=24000",
                    "data": base64.b64encode(answer[start : start + step]).decode(),
                }
                await self.send({"serverContent": {"modelTurn": {"parts": [{"inlineData": blob}]}}})
            if "outputAudioTranscription" in self.setup:
                await self.send(
                    {"serverContent": {"outputTranscription": {"text": spoken or "echo"}}}
                )
        await self.send({"serverContent": {"generationComplete": True}})
        vertex = self.server.flavour == "vertex"
        usage = {
            "promptTokenCount": 10 + len(heard) // 100,
            ("candidatesTokenCount" if vertex else "responseTokenCount"): 5,
            "totalTokenCount": 15 + len(heard) // 100,
            "promptTokensDetails": [
                {"modality": "AUDIO", "tokenCount": len(heard) // 100},
                {"modality": "TEXT", "tokenCount": 10},
            ],
        }
        await self.send({"serverContent": {"turnComplete": True}, "usageMetadata": usage})
        self.turns += 1
        await self.send(
            {
                "sessionResumptionUpdate": {
                    "newHandle": self.server._new_handle(self.turns),
                    "resumable": True,
                }
            }
        )
        limit = self.server.goaway_after_turns
        if limit is not None and self.turns >= limit and scope.deadline == float("inf"):
            left = self.server.goaway_time_left
            await self.send({"goAway": {"timeLeft": f"{left}s"}})
            scope.deadline = trio.current_time() + left


# -- the token endpoint ----------------------------------------------------------------------


def make_service_account(
    token_uri: str, *, project_id: str = "fake-project"
) -> tuple[str, rsa.RSAPublicKey]:
    """A service-account key file (JSON text) with a fresh RSA key, and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "kid-1",
        "private_key": pem,
        "client_email": f"rtgate-test@{project_id}.iam.gserviceaccount.com",
        "token_uri": token_uri,
    }
    return json.dumps(info), key.public_key()


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@attrs.define
class FakeTokenEndpoint:
    """``POST /token`` with the JWT-bearer grant; verifies the assertion against ``public_key``."""

    public_key: rsa.RSAPublicKey | None = None
    expires_in: int | str = 3600
    fail_status: int | None = None
    hang: bool = False
    issued: list[str] = attrs.field(factory=list)
    requests: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            self.requests += 1
            if self.hang:
                await trio.sleep_forever()
            status, payload = self._answer(body)
            headers = [
                ("content-type", "application/json"),
                ("content-length", str(len(payload))),
                ("connection", "close"),
            ]
            await stream.send_all(
                conn.send(h11.Response(status_code=status, headers=headers)) or b""
            )
            await stream.send_all(conn.send(h11.Data(data=payload)) or b"")
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")

    def _answer(self, body: bytes) -> tuple[int, bytes]:
        if self.fail_status is not None:
            return (
                self.fail_status,
                b'{"error":"invalid_grant","error_description":"Invalid JWT Signature."}',
            )
        form = urllib.parse.parse_qs(body.decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, b'{"error":"unsupported_grant_type"}'
        try:
            header_b64, claims_b64, signature_b64 = form["assertion"][0].split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            if self.public_key is not None:
                self.public_key.verify(
                    _b64url_decode(signature_b64),
                    f"{header_b64}.{claims_b64}".encode(),
                    padding.PKCS1v15(),
                    hashes.SHA256(),
                )
        except Exception:
            return 400, b'{"error":"invalid_grant","error_description":"Invalid JWT Signature."}'
        if (
            header.get("alg") != "RS256"
            or claims.get("aud") != self.url
            or "cloud-platform" not in claims.get("scope", "")
        ):
            return 400, b'{"error":"invalid_grant","error_description":"Invalid JWT claims."}'
        token = f"ya29.fake-token-{len(self.issued) + 1}"
        self.issued.append(token)
        return 200, orjson.dumps(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )
