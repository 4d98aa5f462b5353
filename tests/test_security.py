"""Security properties end to end: what clients can steer, and where keys can never appear.

Keys here are deliberately *not* shaped like ``sk-...``: the generic key
patterns of :func:`rtgate.errors.scrub` would hide those by luck; these must
be kept out by design (scrubbing with the configured secrets, not logging
headers, hashing client keys).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson
import pytest
import trio

from rtgate.edge.configfile import parse_text
from rtgate.telemetry.eventlog import EventLogger
from rtgate.testing.fake_upstream import FakeBehaviour, FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.test_faults_support import HandshakeRefused, RawWs, sessions_idle
from tests.test_ops_support import http_get

MASTER = "master-plain-secret-7777abcd"
TEAM = "team-plain-secret-8888abcd"
UPSTREAM = "0f3a9c1d2e4b5a69788776655443322"
BROKEN_UPSTREAM = "1e2d3c4b5a69788776655443322ffee"
WRONG_CLIENT = "wrong-client-attempt-99999"
ALL_KEYS = (MASTER, TEAM, UPSTREAM, BROKEN_UPSTREAM, WRONG_CLIENT)


def security_yaml(good: str, broken: str, log_path: Path, extra: str = "") -> str:
    return f"""
model_list:
  - model_name: gpt-realtime
    litellm_params:
      model: openai/gpt-realtime
      api_key: {UPSTREAM}
      api_base: {good}
    model_info:
      id: good
  - model_name: broken
    litellm_params:
      model: azure/deploy
      api_key: {BROKEN_UPSTREAM}
      api_base: {broken}
    model_info:
      id: broken
general_settings:
  master_key: {MASTER}
litellm_settings:
  logged_real_time_event_types: "*"
rtgate:
  keys:
    - alias: team
      key: {TEAM}
  limits:
    connect_timeout: 1
    ping_interval: 0
    drain_seconds: 0.5
  event_log:
    flush_interval: 0.05
    sinks:
      - type: file
        path: {log_path}
      - type: stderr
{extra}
"""


# -- what the client may steer -----------------------------------------------------------


async def test_client_headers_and_query_never_choose_or_reach_the_upstream(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    good = FakeRealtimeServer(api_key=UPSTREAM)
    evil = FakeRealtimeServer(api_key=UPSTREAM)
    await nursery.start(good.serve)
    await nursery.start(evil.serve)
    evil_url = f"ws://127.0.0.1:{evil.port}/v1"
    config = security_yaml(good.base_url, evil_url, tmp_path / "e.jsonl")
    hostile_headers = {
        "Authorization": f"Bearer {MASTER}",
        "X-Forwarded-Host": f"127.0.0.1:{evil.port}",
        "X-Api-Base": evil_url,
        "Forwarded": f"host=127.0.0.1:{evil.port}",
        "OpenAI-Organization": "org-client",
        "OpenAI-Project": "proj-client",
        "Cookie": "session=client-cookie",
        "X-Custom": "client-value",
        "OpenAI-Safety-Identifier": "user-123",
    }
    query = (
        f"/v1/realtime?model=gpt-realtime&api_base={evil_url}&base_url={evil_url}"
        f"&host=127.0.0.1:{evil.port}&api_key=client-query-key&extra=1"
    )
    with trio.fail_after(10):
        async with open_gateway(config, event_log=None) as gw:
            ws = await RawWs.open(gw.port, query, hostile_headers)
            try:
                assert (await ws.recv_json())["type"] == "session.created"
            finally:
                await ws.aclose()
            await sessions_idle(gw)
    assert evil.dials == 0
    assert good.paths == ["/v1/realtime?model=gpt-realtime"]
    seen = good.headers_seen[0]
    handshake = {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
                 "user-agent", "sec-websocket-extensions"}  # fmt: skip
    assert set(seen) - handshake == {"authorization", "openai-safety-identifier"}
    assert seen["authorization"] == f"Bearer {UPSTREAM}"  # the deployment's key, not the client's
    assert seen["openai-safety-identifier"] == "user-123"  # the one allow-listed header
    assert MASTER not in str(seen)


async def test_origin_allow_list_refuses_other_browser_origins(
    fake_openai: FakeRealtimeServer, tmp_path: Path
) -> None:
    config = security_yaml(
        fake_openai.base_url, fake_openai.base_url, tmp_path / "e.jsonl",
        extra="  allowed_origins: [https://app.example.com]",
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {MASTER}"}
    path = "/v1/realtime?model=gpt-realtime"
    with trio.fail_after(10):
        async with open_gateway(config.replace(UPSTREAM, "sk-fake-upstream-key")) as gw:
            with pytest.raises(HandshakeRefused) as info:
                await RawWs.open(gw.port, path, {**auth, "Origin": "https://evil.example"})
            for headers in ({**auth, "Origin": "https://app.example.com"}, auth):
                ws = await RawWs.open(gw.port, path, headers)  # allowed origin; non-browser
                await ws.recv_json()
                await ws.aclose()
    assert info.value.status == 403
    assert fake_openai.dials == 2  # the refused origin never caused a dial


# -- keys never leave ----------------------------------------------------------------------


async def test_keys_never_appear_in_logs_records_metrics_admin_or_client_frames(
    nursery: trio.Nursery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    good = FakeRealtimeServer(api_key=UPSTREAM)
    broken = FakeRealtimeServer(
        api_key="the-broken-deployment-expects-another-key", flavour="azure"
    )
    await nursery.start(good.serve)
    await nursery.start(broken.serve)
    log_path = tmp_path / "events.jsonl"
    config = parse_text(
        security_yaml(good.base_url, broken.base_url, log_path), path="<test>", env={}
    ).config
    event_log = EventLogger.for_config(config)
    seen: list[str] = []  # every byte a client or operator could read

    async def refused(headers: dict[str, str], path: str) -> None:
        with pytest.raises(HandshakeRefused) as info:
            await RawWs.open(gw.port, path, headers)
        seen.append(f"{info.value.status} {info.value.headers} {info.value.body!r}")

    async def full_session(headers: dict[str, str], subprotocols: tuple[str, ...] = ()) -> None:
        ws = await RawWs.open(gw.port, "/v1/realtime?model=gpt-realtime", headers, subprotocols)
        try:
            await ws.send_json({"type": "session.update", "session": {"type": "realtime"}})
            await ws.send_json({"type": "response.create"})
            while True:
                event = await ws.recv_json()
                seen.append(orjson.dumps(event).decode())
                if event["type"] == "response.done":
                    break
            ws.protocol.send_close(1000, "")
            await ws.flush()
            events, close = await ws.recv_until_closed()
            seen.append(f"{events} {close.code} {close.reason}")
        finally:
            await ws.aclose()

    async def ends_by_upstream(behaviour: FakeBehaviour, *, send: bool) -> None:
        good.behaviour = behaviour
        ws = await RawWs.open(gw.port, "/v1/realtime?model=gpt-realtime", master)
        try:
            if send:
                await ws.recv_json()
                await ws.send_json({"type": "input_audio_buffer.append", "audio": "AAAA"})
            events, close = await ws.recv_until_closed()
            seen.extend(orjson.dumps(e).decode() for e in events)
            seen.append(f"{close.code} {close.reason}")
        finally:
            await ws.aclose()
        good.behaviour = FakeBehaviour()

    master = {"Authorization": f"Bearer {MASTER}"}
    with trio.fail_after(20):
        async with open_gateway(config, event_log=event_log) as gw:
            await full_session(master)
            await full_session({"api-key": TEAM})
            await full_session({}, ("realtime", f"openai-insecure-api-key.{TEAM}"))
            # Refusals: wrong key (in each place a key can be), unknown model, every deployment failing.
            for headers, path in [
                ({"Authorization": f"Bearer {WRONG_CLIENT}"}, "/v1/realtime?model=gpt-realtime"),
                ({"api-key": WRONG_CLIENT}, "/v1/realtime?model=gpt-realtime"),
                ({}, f"/openai/realtime?deployment=gpt-realtime&api-key={WRONG_CLIENT}"),
                ({"Authorization": f"Bearer {WRONG_CLIENT}"}, "/v1/realtime?model=broken"),
                (master, "/v1/realtime?model=broken"),  # the provider refuses rtgate's key: 503
                (master, "/v1/realtime?model=nope"),
                ({"Authorization": f"Bearer {TEAM}"}, "/v1/realtime?model=broken"),
            ]:
                await refused(headers, path)
            # Upstream endings that name the key: a close reason, an error event, an abrupt drop.
            await ends_by_upstream(
                FakeBehaviour(close_on_frame=(4001, f"invalid key {UPSTREAM}")), send=True
            )
            await ends_by_upstream(
                FakeBehaviour(close_on_frame=(1011, f"internal: key={UPSTREAM} broke")), send=True
            )
            await ends_by_upstream(
                FakeBehaviour(
                    send_on_connect=(
                        orjson.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                      "message": f"Incorrect API key provided: {UPSTREAM}"}}),
                    ),
                    close_after_accept=None,
                    die_after_frames=1,
                ),
                send=True,
            )  # fmt: skip
            await sessions_idle(gw)
            for path, headers in [("/metrics", {}), ("/admin/pool", master),
                                  ("/health/readiness", {}), ("/admin/pool", {})]:  # fmt: skip
                status, body = await http_get(gw.port, path, headers)
                seen.append(f"{path} {status} {body.decode()}")
            with trio.fail_after(5):
                while event_log is not None and event_log.counters.sessions_queued < 6:
                    await trio.sleep(0.02)
    captured = capfd.readouterr()
    logs = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith("trio-websocket")  # the fake provider's own logger
    )
    records = log_path.read_text()
    everything = {
        "client frames and HTTP answers": "\n".join(seen),
        "logs": logs,
        "stderr": captured.err + captured.out,
        "event-log file": records,
    }
    assert "dial failed" in logs  # the failures were logged...
    assert '"record":"session"' in records.replace(" ", "")  # ...and recorded
    assert "upstream closed the session (4001)" in everything["client frames and HTTP answers"]
    for where, text in everything.items():
        for key in ALL_KEYS:
            leaks = [line for line in text.splitlines() if key in line]
            assert not leaks, f"{key!r} leaked into {where}: {leaks}"


# -- config-file hygiene ---------------------------------------------------------------------


def test_world_readable_config_with_literal_secrets_is_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rtgate.cli import cli

    path = tmp_path / "c.yaml"
    path.write_text(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n"
        f"      api_key: {UPSTREAM}\nrtgate:\n  host: 127.0.0.1\n  port: 1\n"
    )
    os.chmod(path, 0o644)
    result = CliRunner().invoke(cli, ["serve", "-c", str(path)])
    assert result.exit_code == 1
    assert "readable by other users" in result.output
    assert UPSTREAM not in result.output
    # `check` reports the same problem but still validates.
    checked = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert checked.exit_code == 0
    assert "readable by other users" in checked.output
    assert "plain text" in checked.output and UPSTREAM not in checked.output


def test_private_or_env_only_configs_are_accepted(tmp_path: Path) -> None:
    from rtgate.config.load import world_readable_secrets
    from rtgate.edge.configfile import load_config

    literal = (
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n"
        f"      api_key: {UPSTREAM}\n"
    )
    private = tmp_path / "private.yaml"
    private.write_text(literal)
    os.chmod(private, 0o600)
    env_only = tmp_path / "env.yaml"
    env_only.write_text(literal.replace(UPSTREAM, "os.environ/UP_KEY"))
    os.chmod(env_only, 0o644)
    opted_out = tmp_path / "optout.yaml"
    opted_out.write_text(literal + "rtgate:\n  allow_world_readable_secrets: true\n")
    os.chmod(opted_out, 0o644)
    env = {"UP_KEY": UPSTREAM}
    assert world_readable_secrets(str(private), load_config(private, env)) is None
    assert world_readable_secrets(str(env_only), load_config(env_only, env)) is None
    assert world_readable_secrets(str(opted_out), load_config(opted_out, env)) is None
    group_readable = tmp_path / "group.yaml"
    group_readable.write_text(literal)
    os.chmod(group_readable, 0o640)
    problem = world_readable_secrets(str(group_readable), load_config(group_readable, env))
    assert problem is not None and "chmod 600" in problem


def test_upstream_tls_verification_is_on_by_default() -> None:
    config = parse_text(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n"
        "      api_key: os.environ/K\n",
        env={"K": "v"},
    ).config
    tls = config.deployments[0].tls
    assert tls.verify is True and tls.ca_bundle is None
    from rtgate.net.upstream_ws import ssl_context_for

    ctx = ssl_context_for(tls)
    import ssl

    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
