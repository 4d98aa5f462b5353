"""Client secrets end to end: minted over HTTP, used to open sessions with every auth form.

The real ``openai`` SDK mints and connects; raw handshakes check the refusals
happen before any upgrade (and before any upstream is dialed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from rtgate.config.load import parse_text
from rtgate.session.client_secrets import ClientSecrets, SecretGrant
from rtgate.telemetry.eventlog import EventLogger
from rtgate.testing.fake_gemini import FakeGeminiServer
from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.wsclient import connect, raw_handshake, recv_json, recv_until, send_json

TEAM_KEY = "sk-team-voice-key-0000001"
OTHER_KEY = "sk-other-team-key-0000002"
PIRATE = "Speak like a pirate, briefly."


def config_yaml(
    *,
    gemini: FakeGeminiServer | None = None,
    openai: FakeRealtimeServer | None = None,
    extra: str = "",
) -> str:
    entries = [
        """  - model_name: rt-mock
    litellm_params:
      model: mock/gpt-realtime
      reply_audio_ms: 100"""
    ]
    if gemini is not None:
        entries.append(f"""  - model_name: gemini-live
    litellm_params:
      model: gemini/gemini-live-2.5-flash
      api_key: {gemini.api_key}
      api_base: {gemini.base_url}
      setup_wait_seconds: 5""")
    if openai is not None:
        entries.append(f"""  - model_name: gpt-realtime
    litellm_params:
      model: openai/gpt-realtime
      api_key: {UPSTREAM_KEY}
      api_base: {openai.base_url}""")
    body = "\n".join(entries)
    return f"""
model_list:
{body}
general_settings:
  master_key: {CLIENT_KEY}
rtgate:
  limits:
    connect_timeout: 2
    ping_interval: 0
  keys:
    - alias: team-voice
      key: {TEAM_KEY}
      models: [rt-mock, gemini-live, gpt-realtime]
      max_sessions: 1
    - alias: other
      key: {OTHER_KEY}
      models: [rt-mock]
{extra}
"""


async def http_post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST a JSON body to 127.0.0.1:port; (status, parsed JSON answer)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Connection: close",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, answer = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(answer)


async def mint(
    port: int, session: dict[str, Any], key: str = TEAM_KEY, **extra: Any
) -> tuple[int, dict[str, Any]]:
    body = orjson.dumps({"session": session, **extra})
    return await http_post(
        port, "/v1/realtime/client_secrets", body, {"Authorization": f"Bearer {key}"}
    )


def _sdk_mint_and_talk(http_url: str, ws_url: str) -> dict[str, Any]:
    """The openai SDK mints with the team key, then talks to Gemini with only the secret."""
    from openai import AsyncOpenAI

    async def run() -> dict[str, Any]:
        async with AsyncOpenAI(api_key=TEAM_KEY, base_url=http_url + "/v1") as backend:
            minted = await backend.realtime.client_secrets.create(
                expires_after={"anchor": "created_at", "seconds": 120},
                session={"type": "realtime", "model": "gemini-live", "instructions": PIRATE},
            )
        browser = AsyncOpenAI(api_key=minted.value, websocket_base_url=ws_url + "/v1")
        types: list[str] = []
        async with browser.realtime.connect(model="gemini-live") as conn:
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello"}],
                }
            )
            await conn.response.create()
            async for event in conn:
                types.append(event.type)
                if event.type == "response.done":
                    break
        return {
            "value": minted.value,
            "expires_at": minted.expires_at,
            "session": minted.session.model_dump(),
            "types": types,
        }

    return asyncio.run(asyncio.wait_for(run(), 20))


async def test_sdk_secret_opens_a_gemini_session_with_the_bound_instructions(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rtgate")
    fake = FakeGeminiServer()
    await nursery.start(fake.serve)
    log_path = tmp_path / "events.jsonl"
    yaml = (
        config_yaml(gemini=fake)
        + f"""  event_log:
    flush_interval: 0.05
    sinks:
      - {{type: file, path: {log_path}}}
"""
    )
    config = parse_text(yaml, path="<test>").config
    logger = EventLogger.for_config(config)
    assert logger is not None
    with trio.fail_after(30):
        async with open_gateway(config, event_log=logger) as gw:
            seen = await trio.to_thread.run_sync(_sdk_mint_and_talk, gw.http_url, gw.ws_url)
            while logger.counters.sessions_queued == 0:
                await trio.sleep(0.01)
    assert seen["value"].startswith("ek_")
    assert seen["session"]["instructions"] == PIRATE
    assert seen["session"]["model"] == "gemini-live"
    # The bound configuration reached Gemini's one-shot setup, with no session.update sent.
    (setup,) = fake.setups
    assert setup["systemInstruction"] == {"parts": [{"text": PIRATE}]}
    assert seen["types"][-1] == "response.done"
    # The session counts for the issuing key: its alias is on the session record.
    records = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]
    (record,) = [r for r in records if r["record"] == "session"]
    assert record["key_alias"] == "team-voice"
    assert record["model_group"] == "gemini-live" and record["usage"]
    # Neither the key nor the secret was logged anywhere.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("rtgate"))
    assert "client secret minted: key=team-voice model=gemini-live" in ours
    text = ours + log_path.read_text()
    for secret in (TEAM_KEY, CLIENT_KEY, seen["value"], seen["value"][3:40], fake.api_key):
        assert secret not in text


@pytest.mark.parametrize("form", ["bearer", "api-key", "subprotocol"])
async def test_every_client_auth_form_takes_a_secret(form: str) -> None:
    with trio.fail_after(20):
        async with open_gateway(config_yaml()) as gw:
            status, minted = await mint(
                gw.port, {"type": "realtime", "model": "rt-mock", "instructions": "Be terse."}
            )
            assert status == 200, minted
            secret = minted["value"]
            headers: dict[str, str] = {}
            subprotocols: list[str] = []
            if form == "bearer":
                headers["Authorization"] = f"Bearer {secret}"
            elif form == "api-key":
                headers["api-key"] = secret
            else:
                subprotocols = ["realtime", f"openai-insecure-api-key.{secret}"]
            async with connect(gw.ws_url + "/v1/realtime", headers, subprotocols) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                updated = await recv_json(ws)
                assert updated["type"] == "session.updated"
                assert updated["session"]["instructions"] == "Be terse."


async def test_an_expired_secret_is_refused_before_the_upgrade(
    fake_openai: FakeRealtimeServer,
) -> None:
    config = parse_text(config_yaml(openai=fake_openai), path="<test>").config
    grant = SecretGrant(
        key_digest=hashlib.sha256(TEAM_KEY.encode()).digest(),
        model_group="gpt-realtime",
        session={"type": "realtime"},
        expires_at=1_000_000,  # January 1970: long expired
    )
    expired = ClientSecrets(config).seal(grant)
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            status, _, body = await raw_handshake(
                gw.ws_url + "/v1/realtime?model=gpt-realtime",
                {"Authorization": f"Bearer {expired}"},
            )
            assert status == 401
            assert b"expired" in body
    assert fake_openai.dials == 0


async def test_a_tampered_secret_is_401() -> None:
    with trio.fail_after(20):
        async with open_gateway(config_yaml()) as gw:
            _, minted = await mint(gw.port, {"type": "realtime", "model": "rt-mock"})
            secret = minted["value"]
            flipped = "A" if secret[20] != "A" else "B"
            for bad in (secret[:20] + flipped + secret[21:], secret[:-4], "ek_" + "x" * 60, "ek_"):
                status, _, body = await raw_handshake(
                    gw.ws_url + "/v1/realtime?model=rt-mock", {"Authorization": f"Bearer {bad}"}
                )
                assert status == 401, bad
                assert orjson.loads(body)["error"]["message"] == "invalid client secret"


async def test_a_model_the_key_may_not_use_is_refused_at_minting() -> None:
    with trio.fail_after(20):
        async with open_gateway(config_yaml()) as gw:
            status, answer = await mint(
                gw.port, {"type": "realtime", "model": "gemini-live"}, OTHER_KEY
            )
            assert status == 404  # not served here at all
            status, answer = await mint(
                gw.port, {"type": "realtime", "model": "rt-mock"}, key=OTHER_KEY
            )
            assert status == 200
    # A served group outside the key's allow-list.
    yaml = config_yaml().replace("models: [rt-mock]\n", "models: [gemini-live]\n")
    with trio.fail_after(20):
        async with open_gateway(yaml) as gw:
            status, answer = await mint(
                gw.port, {"type": "realtime", "model": "rt-mock"}, OTHER_KEY
            )
            assert status == 403
            assert "rt-mock" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", ""),
        (b"[]", ""),
        (b'{"session": {"type": "realtime", "model": "rt-mock"}, "expires": 5}', "expires"),
        (
            b'{"session": {"type": "realtime", "model": "rt-mock"}, "expires_after": {"seconds": 5}}',
            "expires_after.seconds",
        ),
        (
            b'{"session": {"type": "realtime", "model": "rt-mock"}, "expires_after": {"seconds": 7201}}',
            "expires_after.seconds",
        ),
        (
            b'{"session": {"type": "realtime", "model": "rt-mock"}, "expires_after": {"anchor": "now"}}',
            "expires_after.anchor",
        ),
        (b'{"session": {"type": "voice", "model": "rt-mock"}}', "session.type"),
        (b'{"session": {"type": "realtime"}}', "session.model"),
        (
            b'{"session": {"type": "realtime", "model": "rt-mock", "instructions": 7}}',
            "session.instructions",
        ),
        (b'{"session": {"type": "realtime", "model": "rt-mock", "voice": "x"}}', "session.voice"),
        (
            b'{"session": {"type": "realtime", "model": "rt-mock", "tools": [1]}}',
            "session.tools[0]",
        ),
        (
            b'{"session": {"type": "realtime", "model": "rt-mock", "max_output_tokens": 0}}',
            "session.max_output_tokens",
        ),
        (b'{"session": "realtime"}', "session"),
    ],
)
async def test_a_malformed_minting_request_is_400_naming_the_field(body: bytes, param: str) -> None:
    with trio.fail_after(20):
        async with open_gateway(config_yaml()) as gw:
            status, answer = await http_post(
                gw.port,
                "/v1/realtime/client_secrets",
                body,
                {"Authorization": f"Bearer {TEAM_KEY}"},
            )
    assert status == 400
    assert answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error"
    if param:
        assert param in answer["error"]["message"]


async def test_a_secret_cannot_mint_another_and_a_wrong_key_cannot_mint() -> None:
    with trio.fail_after(20):
        async with open_gateway(config_yaml()) as gw:
            _, minted = await mint(gw.port, {"type": "realtime", "model": "rt-mock"})
            status, answer = await mint(
                gw.port, {"type": "realtime", "model": "rt-mock"}, minted["value"]
            )
            assert status == 401
            assert "client secret cannot mint" in answer["error"]["message"]
            status, _ = await mint(
                gw.port, {"type": "realtime", "model": "rt-mock"}, "sk-unknown-000"
            )
            assert status == 401
            for path in ("/realtime/client_secrets", "/openai/v1/realtime/client_secrets"):
                status, answer = await http_post(
                    gw.port, path, b'{"session":{"type":"realtime","model":"rt-mock"}}',
                    {"api-key": TEAM_KEY},
                )  # fmt: skip
                assert status == 200 and answer["value"].startswith("ek_")


async def test_a_secret_is_bound_to_its_group_and_its_key_limits() -> None:
    with trio.fail_after(20):
        async with open_gateway(config_yaml()) as gw:
            _, minted = await mint(gw.port, {"type": "realtime", "model": "rt-mock"})
            auth = {"Authorization": f"Bearer {minted['value']}"}
            status, _, body = await raw_handshake(
                gw.ws_url + "/v1/realtime?model=gemini-live", auth
            )
            assert status == 403 and b"rt-mock" in body
            # The secret's session holds the team key's one slot (max_sessions: 1).
            async with connect(gw.ws_url + "/v1/realtime?model=rt-mock", auth) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                status, _, _ = await raw_handshake(
                    gw.ws_url + "/v1/realtime?model=rt-mock",
                    {"Authorization": f"Bearer {TEAM_KEY}"},
                )
                assert status == 429
                await send_json(ws, {"type": "response.create"})
                await recv_until(ws, "response.done", timeout=10)


async def test_removing_the_issuing_key_revokes_its_secrets() -> None:
    yaml = config_yaml()
    with trio.fail_after(20):
        async with open_gateway(yaml) as gw:
            _, minted = await mint(gw.port, {"type": "realtime", "model": "rt-mock"})
            auth = {"Authorization": f"Bearer {minted['value']}"}
            status, _, _ = await raw_handshake(gw.ws_url + "/v1/realtime?model=rt-mock", auth)
            assert status == 101
            without_team = yaml.replace(f"key: {TEAM_KEY}", "key: sk-rotated-team-key-000009")
            gw.gateway.reload(parse_text(without_team, path="<test>").config)
            status, _, body = await raw_handshake(gw.ws_url + "/v1/realtime?model=rt-mock", auth)
            assert status == 401 and b"revoked" in body


async def test_a_database_key_secret_spends_on_that_key_and_dies_when_it_is_blocked(
    fake_openai: FakeRealtimeServer,
) -> None:
    from tests.governance_support import api, expected_cost, priced_config, sdk_session, wait_for

    with trio.fail_after(40):
        async with open_gateway(priced_config(fake_openai.base_url)) as gw:
            _, created = await api(gw.http_url, "POST", "/key/generate", {"key_alias": "web"})
            key = created["key"]
            status, minted = await mint(gw.port, {"type": "realtime", "model": "gpt-realtime"}, key)
            assert status == 200, minted
            secret = minted["value"]
            result = await trio.to_thread.run_sync(sdk_session, gw.ws_url + "/v1", secret)
            want = expected_cost(result["usages"][0])
            assert want > 0

            async def charged() -> bool:
                _, info = await api(gw.http_url, "GET", f"/key/info?key={key}")
                return bool(info["info"]["spend"] >= want * (1 - 1e-9))

            await wait_for(charged)
            await api(gw.http_url, "POST", "/key/block", {"key": key})
            status, _, body = await raw_handshake(
                gw.ws_url + "/v1/realtime?model=gpt-realtime", {"Authorization": f"Bearer {secret}"}
            )
            assert status == 401 and secret[3:20].encode() not in body
