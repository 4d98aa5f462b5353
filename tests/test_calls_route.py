"""``/v1/realtime/calls`` over HTTP: the request shapes, refusals before any dial, hang-up.

The two media paths (forwarded to OpenAI/Azure, terminated by rtgate) have their own
tests; this file checks the route both share, with handlers that record what they got.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio

from rtgate.control.calls import calls_route, parse_offer
from rtgate.errors import InvalidParameter
from rtgate.session.calls import Call, CallAnswer
from rtgate.session.start import SessionStart
from rtgate.testing.gateway import open_gateway
from tests.test_client_secrets import OTHER_KEY, TEAM_KEY, config_yaml, mint

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


async def http_request(
    port: int, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh connection: (status, lower-cased headers, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Connection: close",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, answer = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ", 2)[1]), {k.lower(): v for k, v in fields.items()}, answer


def multipart(fields: dict[str, bytes], boundary: str = "rtgateBoundary7") -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields.items()
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Recorder:
    """A call handler that answers at once and keeps a call running until hung up."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.seen: list[tuple[SessionStart, str, dict[str, Any] | None]] = []
        self.ended = trio.Event()

    async def __call__(
        self, start: SessionStart, sdp: str, session: dict[str, Any] | None
    ) -> CallAnswer:
        self.seen.append((start, sdp, session))
        call_id = f"rtc_test{len(self.seen)}"

        async def run() -> None:
            try:
                await trio.sleep_forever()
            finally:
                self.ended.set()

        self.registry.start(Call(call_id, start.group, start.principal.key_hash), run)
        return CallAnswer(call_id, "v=0\r\ns=answer\r\n")


def test_route_names_the_call_paths() -> None:
    assert calls_route("/v1/realtime/calls") == ("/v1/realtime/calls", None, None)
    assert calls_route("/openai/v1/realtime/calls/rtc_1") == (
        "/openai/v1/realtime/calls",
        "rtc_1",
        None,
    )
    assert calls_route("/realtime/calls/rtc_1/hangup") == ("/realtime/calls", "rtc_1", "hangup")
    assert calls_route("/v1/realtime/calls/rtc_1/other") is None
    assert calls_route("/v1/realtime") is None


def test_offer_shapes_and_their_errors() -> None:
    assert parse_offer("application/sdp", OFFER.encode()) == (OFFER, None)
    body, kind = multipart({"sdp": OFFER.encode(), "session": b'{"model": "m"}'})
    assert parse_offer(kind, body) == (OFFER, {"model": "m"})
    cases = [
        ("text/plain", OFFER.encode(), "sdp"),
        ("application/sdp", b"hello", "sdp"),
        ("application/sdp", b"v=0\r\nm=video 9 RTP 96\r\n", "sdp"),
        ("application/sdp", b"\xff\xfe", "sdp"),
        (*reversed(multipart({"session": b"{}"})), "sdp"),
        (*reversed(multipart({"sdp": OFFER.encode(), "session": b"{nope"})), "session"),
        (*reversed(multipart({"sdp": OFFER.encode(), "session": b"[1]"})), "session"),
    ]
    for content_type, data, param in cases:
        with pytest.raises(InvalidParameter) as caught:
            parse_offer(content_type, data)
        assert caught.value.param == param, (content_type, data)


async def test_offer_is_authorized_dispatched_and_hung_up() -> None:
    with trio.fail_after(20):
        async with open_gateway(config_yaml()) as server:
            gateway = server.gateway
            recorder = Recorder(gateway.calls)
            gateway.calls.terminate = recorder
            port = server.port
            sdp_headers = {"Content-Type": "application/sdp"}

            status, _, body = await http_request(
                port, "POST", "/v1/realtime/calls?model=rt-mock", OFFER.encode(), sdp_headers
            )
            assert status == 401, body
            status, _, body = await http_request(
                port,
                "POST",
                "/v1/realtime/calls?model=rt-mock",
                b"v=1",
                {**sdp_headers, "Authorization": f"Bearer {TEAM_KEY}"},
            )
            assert status == 400
            assert orjson.loads(body)["error"]["param"] == "sdp"
            status, _, body = await http_request(
                port,
                "POST",
                "/v1/realtime/calls?model=gemini-live",
                OFFER.encode(),
                {**sdp_headers, "Authorization": f"Bearer {OTHER_KEY}"},
            )
            assert status == 403, body
            assert recorder.seen == []  # every refusal came before any handler ran

            # A client secret names the group; the multipart session travels along.
            minted_status, minted = await mint(port, {"type": "realtime", "model": "rt-mock"})
            assert minted_status == 200
            form, kind = multipart({"sdp": OFFER.encode(), "session": b'{"instructions": "hi"}'})
            status, headers, body = await http_request(
                port,
                "POST",
                "/v1/realtime/calls",
                form,
                {"Content-Type": kind, "Authorization": f"Bearer {minted['value']}"},
            )
            assert status == 201, body
            assert headers["content-type"] == "application/sdp"
            assert headers["location"] == "/v1/realtime/calls/rtc_test1"
            assert body.startswith(b"v=0")
            start, sdp, session = recorder.seen[0]
            assert (start.group, sdp, session) == ("rt-mock", OFFER, {"instructions": "hi"})
            assert start.initial_config is not None  # the secret's bound configuration

            # Only the key that started the call (or the master key) hangs it up.
            status, _, _ = await http_request(
                port,
                "DELETE",
                "/v1/realtime/calls/rtc_test1",
                b"",
                {"Authorization": f"Bearer {OTHER_KEY}"},
            )
            assert status == 404
            assert not recorder.ended.is_set()
            status, _, _ = await http_request(
                port,
                "POST",
                "/v1/realtime/calls/rtc_test1/hangup",
                b"",
                {"Authorization": f"Bearer {TEAM_KEY}"},
            )
            assert status == 200
            await recorder.ended.wait()
            assert len(gateway.calls) == 0


async def test_a_group_without_a_media_path_is_refused_with_400() -> None:
    with trio.fail_after(20):
        async with open_gateway(config_yaml()) as server:
            server.gateway.calls.terminate = None
            status, _, body = await http_request(
                server.port,
                "POST",
                "/v1/realtime/calls?model=rt-mock",
                OFFER.encode(),
                {"Content-Type": "application/sdp", "Authorization": f"Bearer {TEAM_KEY}"},
            )
            assert status == 400
            assert b"not available" in body
