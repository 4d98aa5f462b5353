"""Upstream faults end to end: client -> rtgate -> a misbehaving fake on 127.0.0.1.

Before the session starts (dial, TLS, upgrade, first event) a fault means
failover to the next deployment and a pool that learned why; after it started,
an OpenAI ``error`` event and a close code for the client. Every test also
checks that the gateway keeps serving and that no socket or task is left over.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
import trio
import trustme
from websockets.frames import Frame, Opcode

from rtgate.edge.server import ServerHandle
from rtgate.testing.fake_upstream import FakeBehaviour, FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import UPSTREAM_KEY, gateway_yaml, openai_deployment
from tests.test_faults_support import (
    AUTH,
    PATH,
    HandshakeRefused,
    LeakCheck,
    RawWs,
    open_session,
    pool_stats,
    sessions_idle,
    single_yaml,
)
from tests.test_ops_support import free_port

APPEND = {"type": "input_audio_buffer.append", "audio": "AAAA"}


def failover_yaml(bad: str, good: str, *, bad_params: str = "", limits: str = "") -> str:
    """Group ``gpt-realtime``: deployment ``bad`` first, ``good`` as standby (weight 0)."""
    return gateway_yaml(
        openai_deployment("gpt-realtime", bad, extra=bad_params, deployment_id="bad"),
        openai_deployment("gpt-realtime", good, extra="      weight: 0", deployment_id="good"),
        limits=f"    connect_timeout: 0.5\n    ping_interval: 0\n    drain_seconds: 0.5\n{limits}",
    )


async def _session_works(gw: ServerHandle) -> None:
    await (await open_session(gw)).aclose()


# -- helpers: servers that fail below the WebSocket layer ------------------------------


async def _serve_tcp(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def guarded(stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    nursery.start_soon(trio.serve_listeners, guarded, listeners)
    return int(listeners[0].socket.getsockname()[1])


async def silent_server(nursery: trio.Nursery) -> int:
    """Accepts TCP, never answers the upgrade, closes when the peer does."""

    async def handler(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):
            pass

    return await _serve_tcp(nursery, handler)


async def tls_front(
    nursery: trio.Nursery,
    ca: trustme.CA,
    target_port: int,
    identities: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> int:
    """TLS termination (a certificate from ``ca``) in front of a plain fake."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*identities).configure_cert(ctx)

    async def copy(src: trio.abc.Stream, dst: trio.abc.Stream, scope: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
        finally:
            scope.cancel()

    async def handler(raw: trio.SocketStream) -> None:
        stream = trio.SSLStream(raw, ctx, server_side=True)
        await stream.do_handshake()
        inner = await trio.open_tcp_stream("127.0.0.1", target_port)
        async with inner, trio.open_nursery() as pair:
            pair.start_soon(copy, stream, inner, pair.cancel_scope)
            pair.start_soon(copy, inner, stream, pair.cancel_scope)

    return await _serve_tcp(nursery, handler)


# -- before the session: failover ----------------------------------------------------


async def _dial_fault_case(
    bad_base: str, good_base: str, kind: str, *, bad_params: str = ""
) -> dict[str, dict[str, object]]:
    with trio.fail_after(15):
        async with open_gateway(failover_yaml(bad_base, good_base, bad_params=bad_params)) as gw:
            await _session_works(gw)
            await sessions_idle(gw)
            leaks = await LeakCheck.start()
            for _ in range(3):
                await _session_works(gw)
            await sessions_idle(gw)
            await leaks.settled()
            stats = pool_stats(gw)
            assert gw.gateway.counters.dial_failures.get(kind, 0) >= 1
    assert stats["bad"]["last_error"] == kind
    return stats


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        (FakeBehaviour(reject_status=401), "auth"),
        (FakeBehaviour(reject_status=403), "auth"),
        (FakeBehaviour(reject_status=429, retry_after="7"), "throttled"),
        (FakeBehaviour(reject_status=500), "rejected"),
        (FakeBehaviour(reject_status=503), "rejected"),
        (FakeBehaviour(close_after_accept=(1011, "going away at once")), "closed"),
    ],
    ids=["401", "403", "429", "500", "503", "close-after-accept"],
)
async def test_upgrade_faults_fail_over_and_teach_the_pool(
    nursery: trio.Nursery,
    fake_openai: FakeRealtimeServer,
    behaviour: FakeBehaviour,
    kind: str,
) -> None:
    bad = FakeRealtimeServer(api_key=UPSTREAM_KEY, behaviour=behaviour)
    await nursery.start(bad.serve)
    stats = await _dial_fault_case(bad.base_url, fake_openai.base_url, kind)
    assert fake_openai.sessions == 4  # every client was served by the standby
    assert bad.dials >= 1
    assert stats["good"]["consecutive_failures"] == 0
    if kind == "throttled":
        assert stats["bad"]["state"] == "ejected"  # the provider's Retry-After is honoured
        assert 0 < float(stats["bad"]["cooldown_remaining"]) <= 7  # type: ignore[arg-type]


async def test_refused_connection_fails_over(fake_openai: FakeRealtimeServer) -> None:
    await _dial_fault_case(f"ws://127.0.0.1:{free_port()}/v1", fake_openai.base_url, "refused")
    assert fake_openai.sessions == 4


async def test_unresolvable_host_fails_over(fake_openai: FakeRealtimeServer) -> None:
    await _dial_fault_case("wss://no-such-host.invalid/v1", fake_openai.base_url, "dns")
    assert fake_openai.sessions == 4


async def test_hanging_handshake_is_bounded_by_connect_timeout(
    nursery: trio.Nursery, fake_openai: FakeRealtimeServer
) -> None:
    port = await silent_server(nursery)
    started = trio.current_time()
    await _dial_fault_case(f"ws://127.0.0.1:{port}/v1", fake_openai.base_url, "timeout")
    # One 0.5 s timeout before the pool learns to skip it (3 strikes eject it): well under 10 s.
    assert trio.current_time() - started < 8
    assert fake_openai.sessions == 4


async def test_untrusted_certificate_is_a_tls_failure(
    nursery: trio.Nursery, fake_openai: FakeRealtimeServer
) -> None:
    """Verification is on by default: a certificate from an unknown CA is refused."""
    port = await tls_front(nursery, trustme.CA(), fake_openai.port)
    await _dial_fault_case(f"wss://127.0.0.1:{port}/v1", fake_openai.base_url, "tls")
    assert fake_openai.sessions == 4  # all of them through the plain standby


async def test_ssl_verify_false_accepts_the_same_certificate(
    nursery: trio.Nursery, fake_openai: FakeRealtimeServer
) -> None:
    port = await tls_front(nursery, trustme.CA(), fake_openai.port)
    config = single_yaml(f"wss://127.0.0.1:{port}/v1", params="      ssl_verify: false")
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            await _session_works(gw)
            stats = pool_stats(gw)
    assert stats["only"]["last_error"] is None
    assert fake_openai.sessions == 1


async def test_ca_bundle_trusts_a_private_ca_with_hostname_check(
    nursery: trio.Nursery, fake_openai: FakeRealtimeServer, tmp_path: Path
) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    right = await tls_front(nursery, ca, fake_openai.port)
    wrong_name = await tls_front(nursery, ca, fake_openai.port, identities=("other.example",))
    with_bundle = f"      ca_bundle: {bundle}"
    with trio.fail_after(10):
        async with open_gateway(
            single_yaml(f"wss://127.0.0.1:{right}/v1", params=with_bundle)
        ) as gw:
            await _session_works(gw)
        assert fake_openai.sessions == 1
        # The bundle adds trust; it does not switch off the hostname check.
        async with open_gateway(
            single_yaml(f"wss://127.0.0.1:{wrong_name}/v1", params=with_bundle)
        ) as gw:
            with pytest.raises(HandshakeRefused) as info:
                await RawWs.open(gw.port, PATH, AUTH)
            assert gw.gateway.counters.dial_failures == {"tls": 1}
    assert info.value.status == 503
    assert fake_openai.sessions == 1


# -- during the session: error event, close code, pool told -------------------------


async def _mid_session_fault(
    fake: FakeRealtimeServer, behaviour: FakeBehaviour, *, limits: str = "", send: bool = True
) -> tuple[list[dict[str, object]], int, dict[str, dict[str, object]]]:
    with trio.fail_after(15):
        async with open_gateway(single_yaml(fake.base_url, limits=limits)) as gw:
            await _session_works(gw)
            await sessions_idle(gw)
            fake.behaviour = behaviour  # armed after the warm-up session
            leaks = await LeakCheck.start()
            ws = await RawWs.open(gw.port, PATH, AUTH)
            try:
                if send:
                    await ws.recv_json()
                    await ws.send_json(APPEND)
                events, close = await ws.recv_until_closed()
            finally:
                await ws.aclose()
            await sessions_idle(gw)
            await leaks.settled()
            stats = pool_stats(gw)
    return events, close.code, stats


async def test_tcp_reset_mid_session_gives_error_then_1011(
    fake_openai: FakeRealtimeServer,
) -> None:
    events, code, stats = await _mid_session_fault(fake_openai, FakeBehaviour(reset_after_frames=1))
    assert [e["type"] for e in events] == ["error"]
    assert code == 1011
    # An abnormal end right after the start counts against the deployment.
    assert stats["only"]["consecutive_early_closes"] == 1
    assert stats["only"]["last_error"] == "early_close"


async def test_invalid_utf8_from_upstream_gives_error_then_1011(
    fake_openai: FakeRealtimeServer,
) -> None:
    bad_text = Frame(Opcode.TEXT, b'{"type":"\xff\xfe"}').serialize(mask=False, extensions=[])
    events, code, stats = await _mid_session_fault(
        fake_openai, FakeBehaviour(raw_on_connect=(bad_text,)), send=False
    )
    assert [e["type"] for e in events] == ["session.created", "error"]
    assert code == 1011
    assert stats["only"]["consecutive_early_closes"] == 1
    assert fake_openai.close_codes[-1] == 1007  # the upstream is told why (RFC 6455 7.4.1)


async def test_oversized_upstream_frame_gives_error_then_1011(
    fake_openai: FakeRealtimeServer,
) -> None:
    huge = orjson.dumps({"type": "response.output_audio.delta", "delta": "A" * 20000})
    events, code, stats = await _mid_session_fault(
        fake_openai,
        FakeBehaviour(send_on_connect=(huge,)),
        limits="    max_message_bytes: 8192",
        send=False,
    )
    assert [e["type"] for e in events] == ["session.created", "error"]
    assert code == 1011
    assert stats["only"]["consecutive_early_closes"] == 1


async def test_odd_upstream_frames_pass_through_and_the_session_goes_on(
    fake_openai: FakeRealtimeServer,
) -> None:
    """Unknown events, non-JSON text and binary frames are relayed verbatim (no decoding)."""
    binary = Frame(Opcode.BINARY, b"\x00\x01\xfe").serialize(mask=False, extensions=[])
    not_json = Frame(Opcode.TEXT, b"this is not json").serialize(mask=False, extensions=[])
    fake_openai.behaviour.send_on_connect = (b'{"type":"vendor.future_event","x":1}',)
    fake_openai.behaviour.raw_on_connect = (not_json, binary)
    with trio.fail_after(10):
        async with open_gateway(single_yaml(fake_openai.base_url)) as gw:
            ws = await RawWs.open(gw.port, PATH, AUTH)
            try:
                received: list[Frame] = []
                while len(received) < 4:
                    received += [
                        f for f in await ws.frames() if f.opcode in (Opcode.TEXT, Opcode.BINARY)
                    ]
                await ws.send_json({"type": "session.update", "session": {"type": "realtime"}})
                assert (await ws.recv_json())["type"] == "session.updated"
            finally:
                await ws.aclose()
            await sessions_idle(gw)
            stats = pool_stats(gw)
    assert orjson.loads(received[0].data)["type"] == "session.created"
    assert orjson.loads(received[1].data) == {"type": "vendor.future_event", "x": 1}
    assert (received[2].opcode, bytes(received[2].data)) == (Opcode.TEXT, b"this is not json")
    assert (received[3].opcode, bytes(received[3].data)) == (Opcode.BINARY, b"\x00\x01\xfe")
    assert stats["only"]["last_error"] is None


async def test_upstream_that_stops_reading_is_not_buffered_without_bound(
    fake_openai: FakeRealtimeServer,
) -> None:
    """The client's sends stall once kernel buffers and one bounded chunk are full."""
    fake_openai.behaviour.stop_reading = True
    chunk = orjson.dumps({"type": "input_audio_buffer.append", "audio": "A" * (256 * 1024)})
    sent = 0
    with trio.fail_after(20):
        async with open_gateway(
            single_yaml(fake_openai.base_url, limits="    max_pending_bytes: 262144")
        ) as gw:
            ws = await RawWs.open(gw.port, PATH, AUTH)
            try:
                await ws.recv_json()

                async def pump() -> None:
                    nonlocal sent
                    while sent < 256 * 1024 * 1024:
                        await ws.send_raw_text(chunk)
                        sent += len(chunk)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump)
                    await trio.sleep(1.5)
                    stalled = sent
                    await trio.sleep(1.0)
                    assert sent == stalled, "the client could still send: rtgate kept buffering"
                    nursery.cancel_scope.cancel()
            finally:
                await ws.aclose()
    # Loopback socket buffers (client, rtgate both ways, the fake) plus one chunk: tens of MB at
    # most, far below what the client tried to push.
    assert sent < 64 * 1024 * 1024
