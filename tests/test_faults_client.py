"""Client faults end to end: slowloris, vanishing clients, odd framing, bad input, churn, bad keys.

The clients here are raw sockets driving ``websockets``' sans-IO protocol, so
they can do what a polite client library never does. The upstream is the fake
OpenAI server, which records what reached it and how its side was closed.
"""

from __future__ import annotations

import socket
import struct

import orjson
import pytest
import trio

from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.test_faults_support import (
    PATH,
    HandshakeRefused,
    LeakCheck,
    RawWs,
    open_session,
    pool_stats,
    sessions_idle,
    single_yaml,
)


async def _upstream_closes(fake: FakeRealtimeServer, count: int, timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while len(fake.close_codes) < count:
            await trio.sleep(0.005)


# -- before the upgrade ----------------------------------------------------------------


async def test_slowloris_handshakes_are_cut_at_handshake_timeout(
    fake_openai: FakeRealtimeServer,
) -> None:
    """Clients trickling a request head (or sending nothing) are closed; others are served."""
    config = single_yaml(fake_openai.base_url, limits="    handshake_timeout: 0.5")
    head = f"GET {PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n".encode()
    ended: list[float] = []

    async def trickler(silent: bool, port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        started = trio.current_time()
        async with stream:
            with trio.move_on_after(5):
                try:
                    for i in range(len(head)):
                        if not silent:
                            await stream.send_all(head[i : i + 1])
                        with trio.move_on_after(0.1):
                            if await stream.receive_some(1024) == b"":
                                break
                except trio.BrokenResourceError:
                    pass
        ended.append(trio.current_time() - started)

    with trio.fail_after(15):
        async with open_gateway(config) as gw:
            leaks = await LeakCheck.start()
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(trickler, i % 2 == 0, gw.port)
                await trio.sleep(0.2)
                ws = await open_session(gw)  # a real client is not held up by them
                await ws.aclose()
            await sessions_idle(gw)
            await leaks.settled()
    assert len(ended) == 40
    assert all(0.4 <= t < 2.0 for t in ended), ended
    assert fake_openai.dials == 1


async def test_bad_keys_are_rejected_without_any_upstream_dial(
    fake_openai: FakeRealtimeServer,
) -> None:
    bad = [
        {},
        {"Authorization": "Bearer sk-wrong-000000000000"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"api-key": "x"},
        {"Authorization": "Bearer " + "A" * 4000},
    ]
    with trio.fail_after(15):
        async with open_gateway(single_yaml(fake_openai.base_url)) as gw:
            leaks = await LeakCheck.start()
            statuses: list[int] = []

            async def attempt(i: int) -> None:
                try:
                    ws = await RawWs.open(gw.port, PATH, bad[i % len(bad)])
                except HandshakeRefused as exc:
                    statuses.append(exc.status)
                    assert orjson.loads(exc.body)["error"]["code"] == "invalid_api_key"
                else:
                    await ws.aclose()
                    statuses.append(101)

            for batch in range(10):
                async with trio.open_nursery() as nursery:
                    for i in range(50):
                        nursery.start_soon(attempt, batch * 50 + i)
            # Browser-style key in the subprotocol, wrong too.
            with pytest.raises(HandshakeRefused):
                await RawWs.open(gw.port, PATH, {}, ["realtime", "openai-insecure-api-key.nope"])
            await leaks.settled()
            rejected = dict(gw.gateway.counters.handshakes_rejected)
    assert statuses == [401] * 500
    assert rejected == {401: 501}
    assert fake_openai.dials == 0  # an unauthenticated client never makes rtgate dial


# -- during the session: framing and bad input ------------------------------------------


async def test_fragments_with_control_frames_between_are_reassembled(
    fake_openai: FakeRealtimeServer,
) -> None:
    event = orjson.dumps({"type": "input_audio_buffer.append", "audio": "QUJD" * 1000})
    with trio.fail_after(10):
        async with open_gateway(single_yaml(fake_openai.base_url)) as gw:
            ws = await open_session(gw)
            try:
                proto = ws.protocol
                pieces = [event[i : i + 700] for i in range(0, len(event), 700)]
                proto.send_text(pieces[0], fin=False)
                for piece in pieces[1:-1]:
                    proto.send_ping(b"between")
                    proto.send_continuation(piece, fin=False)
                proto.send_continuation(pieces[-1], fin=True)
                await ws.flush()
                pongs = 0
                with trio.fail_after(3):
                    while pongs < len(pieces) - 2:
                        frames = await ws.frames()
                        pongs += sum(1 for f in frames if f.opcode.name == "PONG")
                with trio.fail_after(3):
                    while not fake_openai.received:
                        await trio.sleep(0.01)
            finally:
                await ws.aclose()
    assert fake_openai.received[0] == event  # one message, byte for byte


@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
async def test_invalid_utf8_from_client_closes_1007(
    fake_openai: FakeRealtimeServer, fragmented: bool
) -> None:
    with trio.fail_after(10):
        async with open_gateway(single_yaml(fake_openai.base_url)) as gw:
            ws = await open_session(gw)
            try:
                if fragmented:
                    # A UTF-8 sequence cut across fragments is fine; an invalid one is not.
                    ws.protocol.send_text(b'{"type":"\xc3', fin=False)
                    ws.protocol.send_continuation(b'\xa9","x":"\xff"}', fin=True)
                    await ws.flush()
                else:
                    await ws.send_raw_text(b'{"type":"\xff"}')
                _, close = await ws.recv_until_closed()
            finally:
                await ws.aclose()
            await _upstream_closes(fake_openai, 1)
            await sessions_idle(gw)
    assert close.code == 1007
    assert fake_openai.received == []  # the bad message never reached the provider
    assert fake_openai.close_codes == [1000]  # the upstream session is ended politely


async def test_oversized_fragmented_message_closes_1009(fake_openai: FakeRealtimeServer) -> None:
    """The size limit applies to the reassembled message, not to each fragment."""
    with trio.fail_after(10):
        async with open_gateway(
            single_yaml(fake_openai.base_url, limits="    max_message_bytes: 8192")
        ) as gw:
            ws = await open_session(gw)
            try:
                ws.protocol.send_text(b'{"type":"input_audio_buffer.append","audio":"', fin=False)
                for _ in range(6):
                    ws.protocol.send_continuation(b"A" * 2000, fin=False)
                ws.protocol.send_continuation(b'"}', fin=True)
                await ws.flush()
                _, close = await ws.recv_until_closed()
            finally:
                await ws.aclose()
            await sessions_idle(gw)
    assert close.code == 1009
    assert fake_openai.received == []


async def test_invalid_json_and_unknown_events_get_error_events_session_continues(
    fake_openai: FakeRealtimeServer,
) -> None:
    with trio.fail_after(10):
        async with open_gateway(single_yaml(fake_openai.base_url)) as gw:
            ws = await open_session(gw)
            try:
                await ws.send_raw_text(b"{not json")
                first = await ws.recv_json()
                await ws.send_json({"type": "no.such.event"})
                second = await ws.recv_json()
                await ws.send_raw_text(b"[1, 2, 3]")
                third = await ws.recv_json()
                await ws.send_json({"type": "session.update", "session": {"type": "realtime"}})
                assert (await ws.recv_json())["type"] == "session.updated"
            finally:
                await ws.aclose()
    for event in (first, second, third):
        assert event["type"] == "error"
        assert event["error"]["type"] == "invalid_request_error"


# -- clients that vanish or stop reading ---------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst", "close-frame-only"])
async def test_abrupt_client_disconnect_closes_upstream_within_a_second(
    fake_openai: FakeRealtimeServer, how: str
) -> None:
    with trio.fail_after(10):
        async with open_gateway(single_yaml(fake_openai.base_url)) as gw:
            ws = await open_session(gw)
            leaks = await LeakCheck.start()
            started = trio.current_time()
            if how == "rst":
                ws.stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            if how == "close-frame-only":
                # Send a close frame, then vanish without waiting for the echo.
                ws.protocol.send_close(1000, "bye")
                await ws.flush()
            await ws.aclose()
            await _upstream_closes(fake_openai, 1, timeout=1.0)
            elapsed = trio.current_time() - started
            await sessions_idle(gw)
            await leaks.settled(slack_fds=0)
            stats = pool_stats(gw)
    assert elapsed < 1.0
    assert fake_openai.close_codes[0] in (1000, 1001)
    assert stats["only"]["active_sessions"] == 0
    # A client leaving is not the deployment's fault.
    assert stats["only"]["consecutive_early_closes"] == 0


async def test_client_that_never_reads_is_closed_with_bounded_buffering(
    fake_openai: FakeRealtimeServer,
) -> None:
    fake_openai.behaviour.reply_audio_ms = 600_000  # ~58 MB of audio for one response
    config = single_yaml(
        fake_openai.base_url, limits="    ping_timeout: 0.5\n    max_pending_bytes: 65536"
    )
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            ws = await open_session(gw)
            try:
                await ws.send_json({"type": "response.create"})
                # Read nothing; rtgate's write times out and it gives up on the client.
                await sessions_idle(gw, timeout=10)
                await _upstream_closes(fake_openai, 1)
            finally:
                await ws.aclose()
            sent_before_close = fake_openai.frames_sent
            relay = gw.gateway.counters.relay
    # The fake could not push the whole response through: the stall reached it.
    assert fake_openai.response_done_sent == 0
    assert sent_before_close < 2000
    assert dict(relay.limit_closes).get("slow_consumer") == 1


# -- churn: thousands of sessions, no leak -------------------------------------------------


async def test_thousands_of_connect_disconnect_cycles_leak_nothing(
    fake_openai: FakeRealtimeServer,
) -> None:
    cycles, parallel = 2000, 40
    with trio.fail_after(60):
        async with open_gateway(single_yaml(fake_openai.base_url)) as gw:
            ws = await open_session(gw)  # warm-up
            await ws.aclose()
            await sessions_idle(gw)
            leaks = await LeakCheck.start()

            async def cycle(i: int) -> None:
                ws = await open_session(gw)
                if i % 3 == 0:
                    ws.protocol.send_close(1000, "")
                    await ws.flush()
                    await ws.recv_until_closed()
                elif i % 3 == 1:
                    await ws.send_json({"type": "input_audio_buffer.append", "audio": "AAAA"})
                await ws.aclose()

            for batch in range(cycles // parallel):
                async with trio.open_nursery() as nursery:
                    for i in range(parallel):
                        nursery.start_soon(cycle, batch * parallel + i)
            await sessions_idle(gw)
            await leaks.settled()
            stats = pool_stats(gw)
            counters = gw.gateway.counters
            assert sum(counters.sessions_started.values()) == cycles + 1
            assert gw.gateway.sessions_by_key.get("master", 0) == 0
    assert stats["only"]["active_sessions"] == 0
    assert stats["only"]["state"] == "closed"  # no client behaviour ejected the deployment
    assert fake_openai.sessions == cycles + 1
