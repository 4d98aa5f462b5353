"""The front door with raw sockets: every refused head gets one HTTP answer, and one log line.

A client library would fix up the bytes (CRLF, header counts, bodies), so these
tests write request heads by hand and read the answer to EOF.
"""

from __future__ import annotations

import logging

import h11
import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from rtgate.edge.head import MAX_HEADERS, MAX_LINE, HeadLimits, Refusal, scan_head
from rtgate.testing.gateway import open_gateway
from tests.test_ops_support import MASTER, mock_config

UPGRADE = (
    "GET /v1/realtime?model=m HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)
HEALTH = "GET /health/liveliness HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def config(extra: str = "") -> str:
    return mock_config(0, extra=extra)


async def exchange(port: int, data: bytes, *, timeout: float = 5) -> bytes:
    """Send ``data``, read to EOF (a reset counts as the end) within ``timeout``."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            try:
                await stream.send_all(data)
            except trio.BrokenResourceError:
                pass
            received = bytearray()
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass
    return bytes(received)


def responses(raw: bytes) -> list[tuple[h11.Response, bytes]]:
    """Every complete HTTP response in ``raw`` (an incomplete tail fails the test)."""
    out: list[tuple[h11.Response, bytes]] = []
    while raw:
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(raw)
        conn.receive_data(b"")
        head = conn.next_event()
        assert isinstance(head, h11.Response), head
        body = bytearray()
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data), event
            body += event.data
        out.append((head, bytes(body)))
        raw = conn.trailing_data[0]
    return out


def one_answer(raw: bytes) -> tuple[int, dict[str, object]]:
    """The one response in ``raw``: its status and JSON body."""
    found = responses(raw)
    assert len(found) == 1, raw[:300]
    response, body = found[0]
    assert dict(response.headers)[b"content-type"] == b"application/json"
    return response.status_code, orjson.loads(body)


@pytest.fixture
def gateway_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="rtgate")
    return caplog


def assert_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


# -- the head's limits, pure ------------------------------------------------------------


def test_scan_head_finds_the_end_and_ignores_the_body() -> None:
    head = (HEALTH + "\r\n").encode()
    assert scan_head(head + b"body bytes") == len(head)
    assert scan_head(head[:-1]) is None


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (HEALTH + "".join(f"X-{i}: v\r\n" for i in range(MAX_HEADERS + 1)) + "\r\n", 431,
         "too_many_headers"),
        (HEALTH + "X-Long: " + "a" * MAX_LINE + "\r\n\r\n", 431, "header_line_too_long"),
        ("GET /" + "a" * MAX_LINE + " HTTP/1.1\r\n\r\n", 414, "uri_too_long"),
        ("GET / HTTP/1.1\nHost: x\n\n", 400, "bare_lf"),
        ("GET / HTTP/1.1\r\nHost: x\n\r\n", 400, "bare_lf"),
        ("\r\nGET / HTTP/1.1\r\n\r\n", 400, "empty_request_line"),
    ],
)  # fmt: skip
def test_scan_head_refusals(head: str, status: int, reason: str) -> None:
    refusal = scan_head(head.encode())
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.reason) == (status, reason)


def test_scan_head_refuses_as_soon_as_a_limit_is_passed() -> None:
    # No end of head yet: an unfinished line over the limit is refused already.
    unfinished = (HEALTH + "X-Long: " + "a" * (MAX_LINE + 10)).encode()
    assert isinstance(scan_head(unfinished), Refusal)
    limits = HeadLimits(max_total=100)
    growing = (HEALTH + "X: " + "a" * 80 + "\r\nY: b").encode()
    refusal = scan_head(growing, limits)
    assert isinstance(refusal, Refusal) and refusal.reason == "head_too_large"


def test_exactly_the_limits_pass() -> None:
    headers = "".join(f"X-{i}: v\r\n" for i in range(MAX_HEADERS - 1))
    long_line = "X-Long: " + "a" * (MAX_LINE - len("X-Long: ")) + "\r\n"
    head = (HEALTH[: HEALTH.index("Host")] + headers + long_line + "\r\n").encode()
    assert scan_head(head) == len(head)


# -- end to end, raw sockets ----------------------------------------------------------------


@pytest.mark.parametrize("start", [UPGRADE, HEALTH], ids=["realtime", "control"])
async def test_too_many_headers_get_431_with_json(
    start: str, gateway_log: pytest.LogCaptureFixture
) -> None:
    head = start + "".join(f"X-Pad-{i}: v\r\n" for i in range(MAX_HEADERS + 1)) + "\r\n"
    async with open_gateway(config()) as gw:
        status, body = one_answer(await exchange(gw.port, head.encode()))
    assert status == 431
    assert body["error"]["code"] == "request_header_fields_too_large"  # type: ignore[index]
    assert_no_errors(gateway_log)


@pytest.mark.parametrize("start", [UPGRADE, HEALTH], ids=["realtime", "control"])
async def test_a_9000_byte_header_line_gets_431(
    start: str, gateway_log: pytest.LogCaptureFixture
) -> None:
    head = start + "X-Long: " + "a" * 9000 + "\r\n\r\n"
    async with open_gateway(config()) as gw:
        status, _ = one_answer(await exchange(gw.port, head.encode()))
    assert status == 431
    assert_no_errors(gateway_log)


async def test_a_head_over_32_kib_gets_431_not_a_reset(
    gateway_log: pytest.LogCaptureFixture,
) -> None:
    # Every line within its limit, the whole head over the total.
    head = UPGRADE + "".join(f"X-Pad-{i}: {'a' * 8000}\r\n" for i in range(6)) + "\r\n"
    async with open_gateway(config()) as gw:
        status, body = one_answer(await exchange(gw.port, head.encode()))
    assert status == 431
    assert "larger than" in body["error"]["message"]  # type: ignore[index]
    assert_no_errors(gateway_log)


async def test_an_upgrade_with_a_body_gets_400_once(gateway_log: pytest.LogCaptureFixture) -> None:
    head = UPGRADE + "Content-Length: 5\r\n\r\nhello"
    async with open_gateway(config()) as gw:
        status, body = one_answer(await exchange(gw.port, head.encode()))
        rejected = dict(gw.gateway.counters.handshakes_rejected)
    assert status == 400
    assert "body" in body["error"]["message"]  # type: ignore[index]
    assert rejected == {400: 1}
    assert_no_errors(gateway_log)


@pytest.mark.parametrize("key", [f"{MASTER}x", MASTER], ids=["wrong key", "right key"])
async def test_garbage_after_an_upgrade_head_gets_400_once(
    gateway_log: pytest.LogCaptureFixture, key: str
) -> None:
    """Bytes that are no frame, sent before the answer, fail the connection inside the
    WebSocket library; the client still gets one JSON answer, whatever its key."""
    head = (UPGRADE + f"Authorization: Bearer {key}\r\n\r\n").encode() + b"\xff" * 6
    async with open_gateway(config()) as gw:
        status, body = one_answer(await exchange(gw.port, head))
        rejected = dict(gw.gateway.counters.handshakes_rejected)
    assert (status, rejected) == (400, {400: 1})
    assert "not a WebSocket frame" in body["error"]["message"]  # type: ignore[index]
    assert_no_errors(gateway_log)


@pytest.mark.parametrize("start", [UPGRADE, HEALTH], ids=["realtime", "control"])
async def test_bare_lf_heads_are_refused_at_once(start: str) -> None:
    head = start.replace("\r\n", "\n") + "\n"
    async with open_gateway(config()) as gw:
        # handshake_timeout is 10 s: the answer must come long before it.
        status, _ = one_answer(await exchange(gw.port, head.encode(), timeout=3))
    assert status == 400


async def test_a_request_line_over_the_limit_gets_414() -> None:
    head = "GET /v1/realtime?model=" + "m" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n"
    async with open_gateway(config()) as gw:
        status, _ = one_answer(await exchange(gw.port, head.encode()))
    assert status == 414


async def test_a_flood_of_bad_heads_logs_a_few_info_lines(
    gateway_log: pytest.LogCaptureFixture,
) -> None:
    head = (UPGRADE + "".join(f"X-{i}: v\r\n" for i in range(MAX_HEADERS + 1)) + "\r\n").encode()
    async with open_gateway(config()) as gw:
        for _ in range(60):
            status, _ = one_answer(await exchange(gw.port, head))
            assert status == 431
    lines = [r for r in gateway_log.records if r.name == "rtgate.front"]
    assert 1 <= len(lines) <= gw.front.refusals.burst
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in lines)
    assert gw.front.refusals.left_out == 60 - len(lines)
    assert_no_errors(gateway_log)


async def test_a_good_head_still_works() -> None:
    async with open_gateway(config()) as gw:
        raw = await exchange(gw.port, (HEALTH + "Connection: close\r\n\r\n").encode())
        status, body = one_answer(raw)
        assert (status, body["status"]) == (200, "alive")
        raw = await exchange(
            gw.port, (UPGRADE + f"Authorization: Bearer {MASTER}x\r\n\r\n").encode()
        )
        assert one_answer(raw)[0] == 401


def test_a_bare_cr_is_refused_without_waiting_for_a_line_end() -> None:
    refusal = scan_head(b"GET /v1/realtime HTTP/1.1\rHost: x\r\r")
    assert isinstance(refusal, Refusal) and refusal.reason == "bare_cr"
    assert scan_head(b"GET / HTTP/1.1\r") is None  # its LF may be the next byte


async def test_the_control_plane_never_switches_protocols() -> None:
    # hypercorn takes Upgrade: h2c and would speak HTTP/2 past the front: the front drops it.
    head = HEALTH + "Connection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\n"
    head += "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    async with open_gateway(config()) as gw:
        status, body = one_answer(await exchange(gw.port, head.encode()))
    assert (status, body["status"]) == (200, "alive")


HEAD_BYTES = st.lists(
    st.sampled_from([b"GET / HTTP/1.1", b"X: v", b"Host: h", b"a" * 40, b"", b"\r", b"\n", b"\r\n",
                     b":", b" ", b"\x00", b"\xff"]),
    max_size=40,
).map(b"".join)  # fmt: skip
SMALL = HeadLimits(max_headers=4, max_line=30, max_total=120)


@settings(max_examples=500, deadline=None)
@given(buf=HEAD_BYTES, cut=st.integers(0, 400))
def test_scan_head_is_consistent_however_the_bytes_arrive(buf: bytes, cut: int) -> None:
    whole = scan_head(buf, SMALL)
    if isinstance(whole, int):
        head = buf[:whole]
        assert head.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in head[:-2]
        lines = head[:-4].split(b"\r\n")
        assert len(lines) - 1 <= SMALL.max_headers and whole <= SMALL.max_total
        assert all(len(line) <= SMALL.max_line and b"\r" not in line and b"\n" not in line
                   for line in lines)  # fmt: skip
    # A prefix is never refused when the whole is not, and never decides otherwise.
    part = scan_head(buf[:cut], SMALL)
    if part is not None:
        assert whole == part


async def _abandon_after_a_while(port: int, data: bytes, wait: float) -> None:
    """Send ``data``, read whatever comes for ``wait`` seconds, then close."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(wait):
            while await stream.receive_some(65536):
                pass


async def test_a_control_request_that_breaks_hypercorn_leaves_sessions_and_the_plane_up(
    gateway_log: pytest.LogCaptureFixture,
) -> None:
    """Bytes after a request that must close the connection make hypercorn answer them
    while the app's answer is being sent, two sends on one stream; that must cost neither
    the gateway nor its sessions."""
    from tests.wsclient import connect, recv_until, send_json

    poison = b"GET /health/liveliness HTTP/1.0\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    with trio.fail_after(30):
        async with open_gateway(config()) as gw:
            url = gw.ws_url + "/v1/realtime?model=m"
            async with connect(url, {"Authorization": f"Bearer {MASTER}"}) as ws:
                for _ in range(12):
                    await _abandon_after_a_while(gw.port, poison, 0.3)
                await send_json(ws, {"type": "response.create"})
                await recv_until(ws, "response.done")
            health = (HEALTH + "Connection: close\r\n\r\n").encode()
            status, _ = one_answer(await exchange(gw.port, health))
            assert status == 200
    assert_no_errors(gateway_log)
