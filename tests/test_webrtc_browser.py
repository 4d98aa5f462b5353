"""A real browser calls through rtgate: headless Chromium runs the example page
(``examples/browser/``), its fake microphone playing a WAV this test writes.

One call to the mock model (its VAD hears the tone and answers), one to the fake Gemini
upstream (the page commits the turn; the fake echoes the audio): each must bring audio
back on the remote track (the page measures its level with an ``AnalyserNode``), GA
events ending in ``response.done`` on the data channel, and a session record in the
event log. Then the tab is closed abruptly and the call must end with its slot freed.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import orjson
import trio

from rtgate.edge.configfile import parse_text
from rtgate.telemetry.eventlog import EventLogger
from rtgate.testing.fake_gemini import FakeGeminiServer
from rtgate.testing.gateway import open_gateway
from rtgate.testing.webrtc_peer import tone
from tests.cdp import Page, open_browser, require_chromium
from tests.test_client_secrets import CLIENT_KEY, TEAM_KEY

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "browser"


def write_wav(path: Path) -> None:
    """The microphone: 0.8 s of a 440 Hz tone, then 4 s of silence (48 kHz mono PCM16)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48_000)
        out.writeframes(tone(int(0.8 * 48_000), 0) + bytes(4 * 48_000 * 2))


def config_yaml(gemini: FakeGeminiServer, log_path: Path) -> str:
    return f"""
model_list:
  - model_name: rt-mock
    litellm_params:
      model: mock/gpt-realtime
      reply_audio_ms: 800
  - model_name: gemini-live
    litellm_params:
      model: gemini/gemini-live-2.5-flash
      api_key: {gemini.api_key}
      api_base: {gemini.base_url}
      setup_wait_seconds: 5
general_settings:
  master_key: {CLIENT_KEY}
rtgate:
  limits:
    connect_timeout: 2
  webrtc:
    idle_timeout: 3
  event_log:
    flush_interval: 0.05
    sinks:
      - type: file
        path: {log_path}
  keys:
    - alias: team-voice
      key: {TEAM_KEY}
      models: [rt-mock, gemini-live]
"""


async def call_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate(
        "({events: rtgateCall.events, level: rtgateCall.level, done: rtgateCall.done,"
        " error: rtgateCall.error, connection: rtgateCall.pc && rtgateCall.pc.connectionState})"
    )
    assert state["error"] is None, state["error"]
    return state


async def wait_page(page: Page, condition: str) -> dict[str, Any]:
    while True:
        state = await call_state(page)
        if await page.evaluate(condition):
            return state
        await trio.sleep(0.1)


async def test_chromium_calls_the_mock_model_and_gemini_through_rtgate(tmp_path: Path) -> None:
    require_chromium()
    wav = tmp_path / "mic.wav"
    write_wav(wav)
    log_path = tmp_path / "events.jsonl"
    gemini = FakeGeminiServer()
    flags = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        # Real host candidates, not mDNS names (a container has no multicast DNS).
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(gemini.serve)
            config = parse_text(config_yaml(gemini, log_path), path="<test>").config
            logger = EventLogger.for_config(config)
            assert logger is not None
            async with open_gateway(config, event_log=logger) as server:
                gateway = server.gateway
                backend = await trio.lowlevel.open_process(
                    [sys.executable, str(EXAMPLE / "server.py"), "--port", "0"],
                    stdout=subprocess.PIPE,
                    env={"RTGATE_URL": f"http://127.0.0.1:{server.port}", "RTGATE_KEY": TEAM_KEY},
                )
                try:
                    assert backend.stdout is not None
                    url = (await backend.stdout.receive_some(200)).decode().strip()
                    assert url.startswith("http://127.0.0.1:"), url
                    async with open_browser(tmp_path, flags) as page:
                        # The mock model: its VAD hears the tone and answers on its own.
                        await page.goto(url + "?model=rt-mock")
                        await page.evaluate("document.getElementById('call').click()")
                        state = await wait_page(
                            page, "rtgateCall.done >= 1 && rtgateCall.level > 0.05"
                        )
                        assert state["connection"] == "connected"
                        events = state["events"]
                        assert events[0] == "session.created"
                        assert "input_audio_buffer.speech_started" in events
                        assert "output_audio_buffer.started" in events
                        assert "response.output_audio.delta" not in events
                        await page.evaluate("document.getElementById('hangup').click()")
                        await _until(lambda: gateway.counters.sessions_active == 0)

                        # Gemini: the page ends its turn; the fake echoes what it heard.
                        await page.goto(url + "?model=gemini-live")
                        await page.evaluate("document.getElementById('call').click()")
                        await wait_page(
                            page,
                            "rtgateCall.channel && rtgateCall.channel.readyState === 'open'"
                            " && rtgateCall.events.includes('session.created')",
                        )
                        await trio.sleep(1.2)  # the tone reaches Gemini as realtime input
                        await page.evaluate(
                            "rtgateCall.channel.send(JSON.stringify("
                            "{type: 'input_audio_buffer.commit'}))"
                        )
                        state = await wait_page(
                            page, "rtgateCall.done >= 1 && rtgateCall.level > 0.05"
                        )
                        assert "response.output_audio_transcript.done" in state["events"] or (
                            "response.done" in state["events"]
                        )
                        assert gateway.counters.sessions_active == 1

                        # The tab goes away without hanging up: the call ends within the
                        # idle timeout, its slot freed.
                        await page.goto("about:blank")
                        await _until(lambda: gateway.counters.sessions_active == 0)
                        await _until(lambda: len(gateway.calls) == 0)
                finally:
                    backend.kill()
                    await backend.wait()
                await _until(lambda: logger.counters.sessions_queued >= 2)
            nursery.cancel_scope.cancel()
    records = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]
    sessions = {r["model_group"]: r for r in records if r["record"] == "session"}
    assert set(sessions) == {"rt-mock", "gemini-live"}
    assert sessions["rt-mock"]["responses"] >= 1
    assert sessions["gemini-live"]["provider"] == "gemini"
    assert sessions["gemini-live"]["bytes_from_client"] > 0
    assert TEAM_KEY not in log_path.read_text()


async def _until(predicate: Any) -> None:
    while not predicate():
        await trio.sleep(0.05)
