"""Calls rtgate terminates, end to end: an aiortc client peer, a running gateway, the mock model.

The client offers an Opus track and the ``oai-events`` channel to ``/v1/realtime/calls``,
speaks a tone, and must get the model's audio back on rtgate's track and the GA events,
ending in ``response.done``, on the channel; no audio delta ever travels on the channel.
Then the ways a call ends: hang-up, a peer that vanishes, a bad offer, the call cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import trio

from rtgate.testing.gateway import open_gateway
from rtgate.testing.webrtc_peer import ClientPeer, wait_for
from rtgate.webrtc.loop import AsyncioThread
from tests.test_calls_route import http_request
from tests.test_client_secrets import CLIENT_KEY, TEAM_KEY, mint

WEBRTC = """
model_list:
  - model_name: rt-mock
    litellm_params:
      model: mock/gpt-realtime
      reply_audio_ms: 600
general_settings:
  master_key: {master}
rtgate:
  limits:
    connect_timeout: 2
  webrtc:
    idle_timeout: {idle}
    max_calls: {max_calls}
  keys:
    - alias: team-voice
      key: {team}
      models: [rt-mock]
      max_sessions: 2
"""


def config(idle: float = 10, max_calls: int = 10) -> str:
    return WEBRTC.format(master=CLIENT_KEY, team=TEAM_KEY, idle=idle, max_calls=max_calls)


@pytest.fixture
async def client_thread() -> AsyncIterator[AsyncioThread]:
    thread = AsyncioThread("test-webrtc-client")
    try:
        yield thread
    finally:
        await thread.aclose()


async def place_call(
    port: int, thread: AsyncioThread, key: str = TEAM_KEY, query: str = "?model=rt-mock"
) -> tuple[ClientPeer, str]:
    """Offer, post, accept: the connected client and the call's id."""
    peer = ClientPeer(thread)
    offer = await thread.run(peer.offer())
    status, headers, body = await http_request(
        port,
        "POST",
        "/v1/realtime/calls" + query,
        offer.encode(),
        {"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"},
    )
    assert status == 201, body
    await thread.run(peer.accept(body.decode()))
    return peer, headers["location"].rsplit("/", 1)[1]


async def test_a_call_speaks_to_the_mock_model_and_hears_it(client_thread: AsyncioThread) -> None:
    with trio.fail_after(30):
        async with open_gateway(config()) as server:
            gateway = server.gateway
            peer, call_id = await place_call(server.port, client_thread)
            assert call_id.startswith("rtc_")
            assert call_id in gateway.calls.calls
            await wait_for(lambda: "session.created" in peer.types() and peer.channel_open)
            assert peer.connection_state == "connected"
            client_thread.soon(peer.speak, 0.6)
            await wait_for(lambda: "response.done" in peer.types())
            await wait_for(lambda: peer.loud_frames >= 10)  # the model's reply, on the track
            types = peer.types()
            assert "input_audio_buffer.speech_started" in types
            assert "input_audio_buffer.committed" in types
            assert "response.output_audio.delta" not in types
            await wait_for(lambda: "output_audio_buffer.stopped" in peer.types())
            started = types.index("output_audio_buffer.started")
            assert peer.events[started]["response_id"]
            done = next(e for e in peer.events if e["type"] == "response.done")
            assert done["response"]["status"] == "completed"  # type: ignore[index]

            # A client event on the channel reaches the translator like a WebSocket one.
            client_thread.soon(peer.send_event, {"type": "response.create"})
            await wait_for(lambda: peer.types().count("response.done") == 2)
            assert gateway.counters.sessions_active == 1

            await client_thread.run(peer.close())
            await wait_for(lambda: gateway.counters.sessions_active == 0)
            await wait_for(lambda: len(gateway.calls) == 0)
            assert gateway.admission.sessions_by_key() in ({}, {"team-voice": 0})


async def test_a_client_secret_and_the_multipart_session_configure_the_call(
    client_thread: AsyncioThread,
) -> None:
    with trio.fail_after(30):
        async with open_gateway(config()) as server:
            status, minted = await mint(
                server.port,
                {"type": "realtime", "model": "rt-mock", "instructions": "be brief"},
            )
            assert status == 200, minted
            peer = ClientPeer(client_thread)
            offer = await client_thread.run(peer.offer())
            boundary = "rtgateCall"
            # A format copied from a WebSocket client must not reach the translator.
            session = orjson.dumps(
                {
                    "output_modalities": ["text"],
                    "audio": {"input": {"format": {"type": "audio/pcmu"}}},
                }
            )
            form = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="sdp"\r\n\r\n{offer}\r\n'
                    f'--{boundary}\r\nContent-Disposition: form-data; name="session"\r\n\r\n'
                ).encode()
                + session
                + f"\r\n--{boundary}--\r\n".encode()
            )
            status, _, body = await http_request(
                server.port,
                "POST",
                "/v1/realtime/calls",
                form,
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Authorization": f"Bearer {minted['value']}",
                },
            )
            assert status == 201, body
            await client_thread.run(peer.accept(body.decode()))
            await wait_for(lambda: "session.updated" in peer.types())
            updated = [e for e in peer.events if e["type"] == "session.updated"][-1]
            assert updated["session"]["output_modalities"] == ["text"]  # type: ignore[index]
            assert updated["session"]["instructions"] == "be brief"  # type: ignore[index]
            assert updated["session"]["audio"]["input"]["format"]["type"] == "audio/pcm"  # type: ignore[index]
            await client_thread.run(peer.close())
            await wait_for(lambda: server.gateway.counters.sessions_active == 0)


async def test_hang_up_ends_the_call_and_frees_its_slot(client_thread: AsyncioThread) -> None:
    with trio.fail_after(30):
        async with open_gateway(config()) as server:
            gateway = server.gateway
            peer, call_id = await place_call(server.port, client_thread)
            await wait_for(lambda: "session.created" in peer.types())
            assert gateway.counters.sessions_active == 1
            status, _, _ = await http_request(
                server.port,
                "DELETE",
                f"/v1/realtime/calls/{call_id}",
                b"",
                {"Authorization": f"Bearer {TEAM_KEY}"},
            )
            assert status == 200
            await wait_for(lambda: gateway.counters.sessions_active == 0 and not gateway.calls)
            await wait_for(lambda: peer.connection_state == "closed")
            # The slot is free again: another call is admitted (max_sessions is 2).
            again, _ = await place_call(server.port, client_thread)
            second, _ = await place_call(server.port, client_thread)
            assert gateway.counters.sessions_active == 2
            for p in (peer, again, second):
                await client_thread.run(p.close())
            await wait_for(lambda: gateway.counters.sessions_active == 0)


async def test_a_vanished_peer_is_ended_within_the_idle_timeout(
    client_thread: AsyncioThread,
) -> None:
    with trio.fail_after(30):
        async with open_gateway(config(idle=1.5)) as server:
            gateway = server.gateway
            peer, _ = await place_call(server.port, client_thread)
            await wait_for(lambda: "session.created" in peer.types())
            await trio.sleep(2)  # audio flowing keeps an idle-timeout call alive
            assert gateway.counters.sessions_active == 1
            await client_thread.run(peer.vanish())
            vanished = trio.current_time()
            await wait_for(lambda: gateway.counters.sessions_active == 0 and not gateway.calls)
            assert trio.current_time() - vanished < 1.5 + 1.0
            closes = list(gateway.recent_closes)
            assert closes[-1]["closed_by"] == "client"
            assert "idle" in str(closes[-1]["reason"])
            await client_thread.run(peer.close())


async def test_bad_offers_and_the_call_cap_are_refused_and_hold_no_slot(
    client_thread: AsyncioThread,
) -> None:
    with trio.fail_after(30):
        async with open_gateway(config(max_calls=1)) as server:
            gateway = server.gateway
            bad = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
            status, _, body = await http_request(
                server.port,
                "POST",
                "/v1/realtime/calls?model=rt-mock",
                bad.encode(),
                {"Content-Type": "application/sdp", "Authorization": f"Bearer {TEAM_KEY}"},
            )
            assert status == 400, body
            assert orjson.loads(body)["error"]["param"] == "sdp"
            assert gateway.counters.sessions_active == 0
            assert gateway.admission.sessions_by_key() in ({}, {"team-voice": 0})

            peer, _ = await place_call(server.port, client_thread)
            other = ClientPeer(client_thread)
            offer = await client_thread.run(other.offer())
            status, _, body = await http_request(
                server.port,
                "POST",
                "/v1/realtime/calls?model=rt-mock",
                offer.encode(),
                {"Content-Type": "application/sdp", "Authorization": f"Bearer {TEAM_KEY}"},
            )
            assert status == 429, body
            assert gateway.counters.sessions_active == 1
            await client_thread.run(other.close())
            await client_thread.run(peer.close())
            await wait_for(lambda: gateway.counters.sessions_active == 0)


async def test_a_page_on_another_origin_may_call(client_thread: AsyncioThread) -> None:
    """Browsers preflight the offer (it carries Authorization): rtgate answers as OpenAI does."""
    with trio.fail_after(20):
        yaml = config().replace("rtgate:\n", "rtgate:\n  allowed_origins: [http://app.test]\n")
        async with open_gateway(yaml) as server:
            preflight = {
                "Origin": "http://app.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            }
            status, headers, _ = await http_request(
                server.port, "OPTIONS", "/v1/realtime/calls", b"", preflight
            )
            assert status == 204
            assert headers["access-control-allow-origin"] == "http://app.test"
            assert "authorization" in headers["access-control-allow-headers"]
            assert "location" in headers["access-control-expose-headers"]
            status, headers, _ = await http_request(
                server.port, "OPTIONS", "/v1/realtime/calls", b"",
                {**preflight, "Origin": "http://elsewhere.test"},
            )  # fmt: skip
            assert "access-control-allow-origin" not in headers

            peer = ClientPeer(client_thread)
            offer = await client_thread.run(peer.offer())
            status, headers, body = await http_request(
                server.port,
                "POST",
                "/v1/realtime/calls?model=rt-mock",
                offer.encode(),
                {
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {TEAM_KEY}",
                    "Origin": "http://app.test",
                },
            )
            assert status == 201, body
            assert headers["access-control-allow-origin"] == "http://app.test"
            await client_thread.run(peer.accept(body.decode()))
            await wait_for(lambda: peer.channel_open)
            await client_thread.run(peer.close())
            await wait_for(lambda: server.gateway.counters.sessions_active == 0)


async def test_a_stopping_gateway_ends_its_calls(client_thread: AsyncioThread) -> None:
    with trio.fail_after(20):
        yaml = config().replace("  limits:\n", "  limits:\n    drain_seconds: 0.5\n")
        async with open_gateway(yaml) as server:
            gateway = server.gateway
            peer, _ = await place_call(server.port, client_thread)
            await wait_for(lambda: "session.created" in peer.types())
            terminated = gateway.calls.terminate
        # The drain's deadline passed: the session was told (an error event), then closed.
        assert gateway.counters.sessions_active == 0 and not gateway.calls
        assert not terminated.thread.started  # type: ignore[union-attr]
        await wait_for(lambda: peer.connection_state == "closed")
        assert peer.types()[-1] == "error"
        await client_thread.run(peer.close())
