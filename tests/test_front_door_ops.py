"""Issue 21 §3 with raw sockets: one credential per request, no URL in a metric label,
the ops listener, the control plane's keep-alive, event-log sinks that cannot work."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
import trio
from click.testing import CliRunner

from rtgate.cli import cli
from rtgate.config.load import parse_text
from rtgate.errors import ConfigError
from rtgate.session.auth import credentials_presented
from rtgate.telemetry.sinks import FileDestination, Sink, sink_problems
from rtgate.testing.gateway import open_gateway
from tests.conftest import gateway_yaml, openai_deployment
from tests.test_front_door import HEALTH, UPGRADE, exchange, one_answer, responses
from tests.test_ops_support import MASTER, free_port, http_get, mock_config, rtgate_process

# -- more than one credential --------------------------------------------------------------


def test_credentials_are_counted_wherever_they_are() -> None:
    auth = [("Authorization", "Bearer a")]
    assert credentials_presented(auth, (), ()) == 1
    assert credentials_presented(auth * 2, (), ()) == 2
    assert credentials_presented([*auth, ("API-Key", "b")], (), ()) == 2
    assert credentials_presented(auth, ["realtime", "openai-insecure-api-key.k"], ()) == 2
    assert credentials_presented([], (), [("api-key", "k"), ("model", "m")]) == 1


@pytest.mark.parametrize(
    ("extra", "query"),
    [
        ("Authorization: Bearer nope\r\nAuthorization: Bearer {key}\r\n", ""),
        ("Authorization: Bearer {key}\r\napi-key: {key}\r\n", ""),
        ("Authorization: Bearer {key}\r\n", "&api-key={key}"),
        ("Authorization: Bearer {key}\r\nSec-WebSocket-Protocol: realtime, "
         "openai-insecure-api-key.{key}\r\n", ""),
    ],
    ids=["two-authorization", "authorization-and-api-key", "header-and-query", "subprotocol"],
)  # fmt: skip
async def test_a_session_with_two_credentials_is_refused(extra: str, query: str) -> None:
    head = UPGRADE.replace("model=m", "model=m" + query.format(key=MASTER))
    head += extra.format(key=MASTER) + "\r\n"
    async with open_gateway(mock_config(0)) as gw:
        status, body = one_answer(await exchange(gw.port, head.encode()))
        assert gw.gateway.counters.sessions_active == 0
    assert status == 400
    assert "more than one credential" in body["error"]["message"]  # type: ignore[index]


async def test_one_credential_still_opens_a_session() -> None:
    head = UPGRADE + f"Authorization: Bearer {MASTER}\r\n\r\n"
    async with open_gateway(mock_config(0)) as gw:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
            async with stream:
                await stream.send_all(head.encode())
                assert (await stream.receive_some(12)).startswith(b"HTTP/1.1 101")


async def test_the_control_plane_refuses_two_credentials_too() -> None:
    twice = {"Authorization": f"Bearer {MASTER}", "api-key": MASTER}
    async with open_gateway(mock_config(0)) as gw:
        with trio.fail_after(5):
            assert (await http_get(gw.port, "/admin/pool", twice))[0] == 400
            one = {"Authorization": f"Bearer {MASTER}"}
            assert (await http_get(gw.port, "/admin/pool", one))[0] == 200


# -- no URL in a label ----------------------------------------------------------------------------

BASE = "http://127.0.0.1:9/private-tenant"


def test_a_derived_deployment_id_holds_no_url() -> None:
    yaml = gateway_yaml(openai_deployment("g", BASE), openai_deployment("g", BASE + "-2"))
    first, second = parse_text(yaml, path="<t>").config.deployments
    assert "127.0.0.1" not in first.id and "tenant" not in first.id
    assert first.id != second.id
    again = parse_text(yaml, path="<t>").config.deployments[0]
    assert again.id == first.id  # stable across reloads


async def test_metrics_carry_no_deployment_url() -> None:
    async with open_gateway(gateway_yaml(openai_deployment("g", BASE))) as gw:
        with trio.fail_after(5):
            status, body = await http_get(gw.port, "/metrics")
    assert status == 200
    assert b"rtgate_deployment_state" in body
    assert b"127.0.0.1:9" not in body and b"private-tenant" not in body


# -- the ops listener -----------------------------------------------------------------------------


def ops_config(extra: str = "") -> str:
    return mock_config(0, extra="  ops_listen: 127.0.0.1:0\n" + extra)


async def test_with_an_ops_listener_the_public_port_keeps_only_health() -> None:
    key = {"Authorization": f"Bearer {MASTER}"}
    async with open_gateway(ops_config()) as gw:
        assert gw.ops_port is not None and gw.ops_port != gw.port
        with trio.fail_after(10):
            assert (await http_get(gw.port, "/metrics"))[0] == 404
            assert (await http_get(gw.port, "/admin/pool", key))[0] == 404
            status, body = await http_get(gw.port, "/health/readiness")
            assert (status, orjson.loads(body)) == (200, {"status": "ready"})
            assert (await http_get(gw.port, "/health/liveliness"))[0] == 200

            status, body = await http_get(gw.ops_port, "/metrics")
            assert status == 200 and b"rtgate_info" in body
            assert (await http_get(gw.ops_port, "/admin/pool", key))[0] == 200
            status, body = await http_get(gw.ops_port, "/health/readiness")
            assert status == 200 and orjson.loads(body)["groups"] == {"m": True}


async def test_the_ops_listener_serves_no_sessions_and_checks_heads_the_same() -> None:
    async with open_gateway(ops_config()) as gw:
        assert gw.ops_port is not None
        head = UPGRADE + f"Authorization: Bearer {MASTER}\r\n\r\n"
        assert one_answer(await exchange(gw.ops_port, head.encode()))[0] == 404
        many = HEALTH + "".join(f"X-{i}: v\r\n" for i in range(129)) + "\r\n"
        assert one_answer(await exchange(gw.ops_port, many.encode()))[0] == 431


async def test_without_an_ops_listener_the_public_port_has_everything() -> None:
    async with open_gateway(mock_config(0)) as gw:
        assert gw.ops_port is None
        with trio.fail_after(5):
            _, body = await http_get(gw.port, "/health/readiness")
            assert orjson.loads(body)["groups"] == {"m": True}
            assert (await http_get(gw.port, "/metrics"))[0] == 200


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("4001", "HOST:PORT"),
        ("::1:4001", "brackets"),
        ("127.0.0.1:http", "HOST:PORT"),
        ("127.0.0.1:4000", "must differ"),
    ],
)
def test_bad_ops_listen_values_are_config_errors(value: str, message: str) -> None:
    yaml = mock_config(4000, extra=f"  ops_listen: '{value}'\n")
    with pytest.raises(ConfigError, match=message):
        parse_text(yaml, path="<t>")


def test_ipv6_ops_listen() -> None:
    yaml = mock_config(4000, extra="  ops_listen: '[::1]:4001'\n")
    assert parse_text(yaml, path="<t>").config.server.ops_address() == ("::1", 4001)


# -- the control plane's keep-alive -------------------------------------------------------------


async def test_a_trickled_second_request_is_cut_at_handshake_timeout() -> None:
    config = mock_config(0).replace(
        "    ping_interval: 0", "    ping_interval: 0\n    handshake_timeout: 1"
    )
    async with open_gateway(config) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            with trio.fail_after(5):
                await stream.send_all((HEALTH + "\r\n").encode())
                received = b""
                while not received.endswith(b"}"):
                    received += await stream.receive_some(65536)
                assert len(responses(received)) == 1  # kept alive
            # hypercorn's default would hold the connection 30 s: it must go after about 1 s.
            with trio.fail_after(4):
                try:
                    for byte in b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\n":
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.1)
                except trio.BrokenResourceError:
                    pass
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass


async def test_a_kept_alive_request_gets_the_same_head_limits() -> None:
    async with open_gateway(mock_config(0)) as gw:
        first = HEALTH + "\r\n"
        second = HEALTH + "".join(f"X-{i}: v\r\n" for i in range(129)) + "Connection: close\r\n\r\n"
        raw = await exchange(gw.port, (first + second).encode())
    statuses = [response.status_code for response, _ in responses(raw)]
    assert statuses == [200, 431]


# -- event-log sinks that cannot work -----------------------------------------------------------


def sinks_config(tmp_path: Path, sink: str) -> Path:
    path = tmp_path / "config.yaml"
    path.touch(mode=0o600)
    path.write_text(mock_config(4000, extra=f"  event_log:\n    sinks:\n      - {sink}\n"))
    return path


@pytest.mark.parametrize(
    ("sink", "problem"),
    [
        ("{type: file, path: /nonexistent-rtgate-dir/events.jsonl}", "does not exist"),
        ("{type: file, path: /dev/full}", "not a regular file"),
        ("{type: file, path: /tmp}", "not a regular file"),
        ("{type: stderr, spool_dir: /dev/null/spool}", "not a directory"),
    ],
)
def test_rtgate_check_refuses_sinks_that_cannot_work(
    tmp_path: Path, sink: str, problem: str
) -> None:
    result = CliRunner().invoke(cli, ["check", "-c", str(sinks_config(tmp_path, sink))])
    assert result.exit_code == 1, result.output
    assert problem in result.output and "sinks[0]" in result.output


def test_rtgate_check_accepts_a_sink_that_can_work(tmp_path: Path) -> None:
    sink = f"{{type: file, path: {tmp_path}/events.jsonl, spool_dir: {tmp_path}/new/spool}}"
    result = CliRunner().invoke(cli, ["check", "-c", str(sinks_config(tmp_path, sink))])
    assert result.exit_code == 0, result.output
    assert sink_problems([{"type": "file", "path": str(tmp_path / "events.jsonl")}]) == []


async def test_a_sink_says_when_its_first_write_failed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rtgate.eventlog")
    full = Sink("full", FileDestination("/dev/full", max_bytes=1 << 20, backups=0), retries=0)
    good = Sink("good", FileDestination("/dev/null", max_bytes=1 << 20, backups=0), retries=0)
    with trio.fail_after(5):
        await full.handle([b'{"a":1}\n'])
        await good.handle([b'{"a":1}\n'])
        await full.handle([b'{"a":2}\n'])
        await full.destination.aclose()
        await good.destination.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "first write" in m] == [
        "event log sink full failed its first write: file:/dev/full: [Errno 28] No space left on device",
        "event log sink good: first write ok",
    ]
    assert (full.first_write, good.first_write) == (False, True)


async def test_serve_names_unusable_sinks_at_start_up(tmp_path: Path) -> None:
    port = free_port()
    extra = "  event_log:\n    sinks:\n      - {type: file, path: /dev/full}\n"
    async with rtgate_process(tmp_path, mock_config(port, extra=extra), port) as child:
        log = child.log()
    assert "event log sink cannot work: rtgate.event_log.sinks[0] (file /dev/full)" in log


async def test_a_reload_changes_the_control_plane_keep_alive(tmp_path: Path) -> None:
    from rtgate.edge.server import _ReloadState
    from rtgate.edge.systemd import Notifier

    path = tmp_path / "config.yaml"
    path.touch(mode=0o600)
    path.write_text(mock_config(0))
    config = parse_text(path.read_text(), path=str(path)).config
    async with open_gateway(config) as gw:
        assert [c.keep_alive_timeout for c in gw.control_configs] == [10.0]
        path.write_text(
            mock_config(0).replace(
                "    ping_interval: 0", "    ping_interval: 0\n    handshake_timeout: 3"
            )
        )
        state = _ReloadState(str(path), config, "127.0.0.1", None, Notifier({}), gw)
        assert state.reload()
        assert [c.keep_alive_timeout for c in gw.control_configs] == [3.0]
