"""Event logging end to end: a client session through rtgate's ``mock/`` model into a file sink."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import trio

from rtgate.edge.configfile import parse_text
from rtgate.telemetry.eventlog import EventLogger
from rtgate.testing.gateway import open_gateway
from tests.wsclient import connect, recv_json, recv_until, send_json

KEY = "sk-eventlog-client-key-0001"
AUDIO = base64.b64encode(bytes(4800)).decode()  # 100 ms of 24 kHz PCM16 silence


def config_yaml(log_path: Path, litellm_settings: str = "", event_log: str = "") -> str:
    return f"""
model_list:
  - model_name: rt-mock
    litellm_params:
      model: mock/gpt-realtime
general_settings:
  master_key: {KEY}
litellm_settings:
{litellm_settings or "  drop_params: true"}
rtgate:
  limits:
    ping_interval: 0
  event_log:
    flush_interval: 0.05
    sinks:
      - type: file
        path: {log_path}
{event_log}
"""


async def one_session(yaml: str) -> None:
    config = parse_text(yaml, path="<test>").config
    logger = EventLogger.for_config(config)
    assert logger is not None
    with trio.fail_after(20):
        async with open_gateway(config, event_log=logger) as gw:
            url = gw.ws_url + "/v1/realtime?model=rt-mock"
            async with connect(url, {"Authorization": f"Bearer {KEY}"}) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                await send_json(ws, {"type": "input_audio_buffer.append", "audio": AUDIO})
                await send_json(
                    ws,
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": "hello"}],
                        },
                    },
                )
                await send_json(ws, {"type": "response.create", "event_id": "evt_client_1"})
                await recv_until(ws, "response.done", timeout=10)
                await ws.aclose()
            with trio.fail_after(5):  # the session record follows the close
                while logger.counters.sessions_queued == 0:
                    await trio.sleep(0.01)


def read_records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_default_event_types_and_session_record(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    await one_session(config_yaml(path))
    records = read_records(path)
    events = [r for r in records if r["record"] == "event"]
    assert [(e["direction"], e["type"]) for e in events] == [
        ("server", "session.created"),
        ("client", "response.create"),
        ("server", "response.done"),
    ]
    assert events[1]["event_id"] == "evt_client_1"
    assert {e["model_group"] for e in events} == {"rt-mock"}
    assert {e["provider"] for e in events} == {"mock"}
    (session,) = [r for r in records if r["record"] == "session"]
    assert session["session_id"] == events[0]["session_id"]
    assert session["closed_by"] == "client"
    assert session["responses"] == 1
    assert session["usage"]["total_tokens"] > 0
    assert session["frames_from_client"] >= 3
    assert session["bytes_to_client"] > session["frames_to_client"] > 0
    assert session["events_logged"] == 3
    assert KEY not in path.read_text()


async def test_usage_survives_filtering_out_response_done(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    await one_session(
        config_yaml(path, litellm_settings="  logged_real_time_event_types: [session.created]")
    )
    records = read_records(path)
    assert [r.get("type") for r in records if r["record"] == "event"] == ["session.created"]
    (session,) = [r for r in records if r["record"] == "session"]
    assert session["usage"]["total_tokens"] > 0  # LiteLLM would report zero cost here


async def test_star_logs_both_directions_with_audio_redacted(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    await one_session(
        config_yaml(
            path,
            litellm_settings='  logged_real_time_event_types: "*"',
            event_log="    redact_paths: [item.content.text]",
        )
    )
    records = read_records(path)
    events = [r for r in records if r["record"] == "event"]
    kinds = [(e["direction"], e["type"]) for e in events]
    assert ("client", "input_audio_buffer.append") in kinds
    assert ("client", "conversation.item.create") in kinds
    assert ("server", "response.output_text.delta") in kinds or (
        "server",
        "response.output_audio.delta",
    ) in kinds
    append = next(e for e in events if e["type"] == "input_audio_buffer.append")
    assert append["event"]["audio"] == "<audio 4800 bytes>"
    create = next(e for e in events if e["type"] == "conversation.item.create")
    assert create["event"]["item"]["content"][0]["text"] == "<redacted>"
    assert AUDIO not in path.read_text()
    assert records[-1]["record"] == "session"
