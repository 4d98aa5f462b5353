"""The Bedrock provider's HTTP/2 link against the fake Bedrock runtime (no gateway)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest
import trio

from rtgate.config.model import Deployment, Secret, TlsSettings
from rtgate.errors import UpstreamClosed, UpstreamConnectError, UpstreamRejected
from rtgate.providers.base import SessionContext, UpstreamLink
from rtgate.providers.bedrock import PROVIDER
from rtgate.testing.fake_bedrock import FakeBedrock, FakeTurn
from rtgate.translate.base import Outbox, Translator

KEY_ID = "AKIDFAKEBEDROCK0001"
SECRET = "fake/secret/key"
CTX = SessionContext(session_id="s1", model_group="nova")


def deployment(fake: FakeBedrock, **params: object) -> Deployment:
    values: dict[str, object] = {
        "aws_access_key_id": Secret(KEY_ID),
        "aws_secret_access_key": Secret(SECRET),
        "aws_region_name": "us-east-1",
    }
    values.update(params)
    return Deployment(
        model_name="nova",
        provider="bedrock",
        model="amazon.nova-sonic-v1:0",
        id="nova-1",
        api_base=fake.base_url,
        tls=TlsSettings(ca_bundle=fake.ca_bundle),
        params=values,
    )


@pytest.fixture
async def fake(nursery: trio.Nursery) -> AsyncIterator[FakeBedrock]:
    server = FakeBedrock(turns=[FakeTurn()])
    await nursery.start(server.serve)
    yield server
    server.close()


async def start_fake(nursery: trio.Nursery, **options: object) -> FakeBedrock:
    server = FakeBedrock(**options)  # type: ignore[arg-type]
    await nursery.start(server.serve)
    return server


def append(pcm: bytes) -> bytes:
    return orjson.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    )


SPEECH = b"\x10\x20" * 2400  # 50 ms of non-silent PCM16 at 24 kHz
SILENCE = b"\x00\x00" * 2400


class Driver:
    """Plays the relay's part: feeds the translator and carries its outbox."""

    def __init__(self, link: UpstreamLink, translator: Translator) -> None:
        self.link = link
        self.t = translator
        self.to_client: list[dict[str, object]] = []

    async def flush(self, out: Outbox) -> None:
        if out.to_upstream:
            await self.link.send(list(out.to_upstream))
        self.to_client += [orjson.loads(f) for f in out.to_client if isinstance(f, bytes)]
        out.clear()

    async def client(self, *frames: bytes) -> None:
        out = Outbox()
        for frame in frames:
            self.t.on_client(frame, out, trio.current_time())
        await self.flush(out)

    async def until(self, kind: str) -> dict[str, object]:
        while True:
            for event in self.to_client:
                if event["type"] == kind:
                    return event
            out = Outbox()
            deadline = self.t.deadline if self.t.deadline is not None else float("inf")
            with trio.move_on_at(deadline):
                for frame in await self.link.receive():
                    self.t.on_upstream(frame, out, trio.current_time())
            if self.t.deadline is not None and trio.current_time() >= self.t.deadline:
                self.t.on_timer(out, trio.current_time())
            await self.flush(out)

    def types(self) -> list[object]:
        return [e["type"] for e in self.to_client]


async def open_session(fake: FakeBedrock, **params: object) -> Driver:
    dep = deployment(fake, **params)
    link = await PROVIDER.connect(dep, CTX)
    driver = Driver(link, PROVIDER.translator(dep, CTX))
    out = Outbox()
    driver.t.start(out, trio.current_time())
    await driver.flush(out)
    return driver


async def test_a_spoken_turn_round_trips_with_valid_signatures(fake: FakeBedrock) -> None:
    with trio.fail_after(10):
        d = await open_session(fake)
        update = {
            "type": "session.update",
            "session": {"instructions": "Be brief.", "audio": {"output": {"voice": "alloy"}}},
        }
        await d.client(orjson.dumps(update), append(SPEECH), append(SPEECH), append(SILENCE))
        done = await d.until("response.done")
        await d.client()
        out = Outbox()
        d.t.on_client_closed(out, trio.current_time())
        await d.flush(out)
        await d.link.aclose()
    session = fake.sessions[0]
    assert session.errors == []
    assert session.path == "/model/amazon.nova-sonic-v1%3A0/invoke-with-bidirectional-stream"
    assert session.names()[:6] == [
        "sessionStart",
        "promptStart",
        "contentStart",
        "textInput",
        "contentEnd",
        "contentStart",
    ]
    assert session.names()[-3:] == ["contentEnd", "promptEnd", "sessionEnd"]
    assert session.names().count("sessionEnd") == 1  # the link did not add its own
    assert session.empty_frame and session.end_stream
    assert session.signed_events == len(session.events) + 1
    assert (
        session.events[1]["event"]["promptStart"]["audioOutputConfiguration"]["voiceId"]
        == "tiffany"
    )
    assert session.audio_bytes == 3 * len(SPEECH)
    response = done["response"]
    assert isinstance(response, dict)
    assert response["status"] == "completed"
    assert response["usage"]["output_token_details"]["audio_tokens"] == 40  # type: ignore[index]
    assert "response.output_audio.delta" in d.types()


async def test_http_429_is_rejected_at_connect_for_failover(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, reject_status=429)
    with trio.fail_after(10), pytest.raises(UpstreamRejected) as info:
        await PROVIDER.connect(deployment(fake), CTX)
    assert (info.value.status, info.value.kind) == (429, "throttled")
    assert "ThrottlingException" in info.value.message
    fake.close()


async def test_wrong_secret_is_an_auth_rejection_and_never_echoes_the_secret(
    fake: FakeBedrock,
) -> None:
    dep = deployment(fake, aws_secret_access_key=Secret("not-the-right-secret"))
    with trio.fail_after(10), pytest.raises(UpstreamRejected) as info:
        await PROVIDER.connect(dep, CTX)
    assert (info.value.status, info.value.kind) == (403, "auth")
    assert "not-the-right-secret" not in str(info.value)
    assert fake.sessions[0].errors == ["request signature does not match"]


async def test_connection_refused_and_untrusted_certificate_are_classified(
    fake: FakeBedrock,
) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = Deployment(
        model_name="nova",
        provider="bedrock",
        model="amazon.nova-sonic-v1:0",
        id="nova-dead",
        api_base=f"https://127.0.0.1:{port}",
        params=deployment(fake).params,
    )
    with trio.fail_after(10):
        with pytest.raises(UpstreamConnectError) as info:
            await PROVIDER.connect(refused, CTX)
        assert info.value.kind == "refused"
        untrusted = Deployment(
            model_name="nova",
            provider="bedrock",
            model="amazon.nova-sonic-v1:0",
            id="nova-untrusted",
            api_base=fake.base_url,
            params=deployment(fake).params,
        )
        with pytest.raises(UpstreamConnectError) as info:
            await PROVIDER.connect(untrusted, CTX)
        assert info.value.kind == "tls"


async def test_in_stream_throttling_surfaces_as_upstream_closed_1013(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, turns=[FakeTurn(exception="throttlingException")])
    with trio.fail_after(10):
        d = await open_session(fake)
        await d.client(append(SPEECH), append(SILENCE))
        with pytest.raises(UpstreamClosed) as info:
            await d.until("never")
        assert (info.value.code, info.value.upstream_error_type) == (1013, "ThrottlingException")
        await d.link.aclose()
    fake.close()


async def test_headers_held_until_the_first_event_still_connect(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, respond_after_first_event=True)
    with trio.fail_after(10):
        d = await open_session(fake, response_header_wait="0.1")
        await d.client(append(SPEECH), append(SILENCE))
        done = await d.until("response.done")
        await d.link.aclose()
    assert done["response"]["status"] == "completed"  # type: ignore[index]
    assert fake.sessions[0].errors == []
    fake.close()


async def test_large_sends_wait_for_the_peer_window(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, receive_window=16384)
    second = b"\x01\x02" * 24000  # one second of audio per append
    with trio.fail_after(10):
        d = await open_session(fake)
        await d.client(*[append(second) for _ in range(8)])
        await d.client(append(SILENCE))
        await d.until("response.done")
        await d.link.aclose()
    session = fake.sessions[0]
    assert session.errors == []
    assert session.audio_bytes == 8 * len(second) + len(SILENCE)
    fake.close()


async def test_speech_during_a_reply_is_a_barge_in(nursery: trio.Nursery) -> None:
    slow = FakeTurn(audio_chunks=200, chunk_interval=0.01)
    fake = await start_fake(nursery, turns=[slow, FakeTurn()])
    with trio.fail_after(10):
        d = await open_session(fake)
        await d.client(append(SPEECH), append(SILENCE))
        await d.until("response.output_audio.delta")
        d.to_client.clear()
        await d.client(append(SPEECH))
        cancelled = await d.until("response.done")
        await d.link.aclose()
    kinds = d.types()
    assert kinds[0] == "input_audio_buffer.speech_started"
    assert cancelled["response"]["status"] == "cancelled"  # type: ignore[index]
    assert kinds.count("response.output_audio.delta") < 200


async def test_tool_call_round_trip(nursery: trio.Nursery) -> None:
    turn = FakeTurn(tool=("weather", {"city": "Oslo"}), reply="It is cold.")
    fake = await start_fake(nursery, turns=[turn])
    tool = {"type": "function", "name": "weather", "parameters": {"type": "object"}}
    with trio.fail_after(10):
        d = await open_session(fake)
        update = {"type": "session.update", "session": {"tools": [tool]}}
        await d.client(orjson.dumps(update), append(SPEECH), append(SILENCE))
        call = await d.until("response.function_call_arguments.done")
        await d.until("response.done")
        d.to_client.clear()
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "{}"}
        await d.client(orjson.dumps({"type": "conversation.item.create", "item": output}))
        transcript = await d.until("response.output_audio_transcript.done")
        await d.link.aclose()
    assert orjson.loads(call["arguments"]) == {"city": "Oslo"}  # type: ignore[arg-type]
    assert transcript["transcript"] == "It is cold."
    assert fake.sessions[0].errors == []


async def test_a_session_ended_by_the_gateway_still_closes_nova_properly(fake: FakeBedrock) -> None:
    with trio.fail_after(10):
        d = await open_session(fake)
        await d.client(append(SPEECH))
        await d.link.aclose(1001, "gateway restarting")  # no on_client_closed first
        with trio.move_on_after(5):
            while not fake.sessions[0].end_stream:
                await trio.sleep(0.01)
    session = fake.sessions[0]
    assert session.names()[-3:] == ["contentEnd", "promptEnd", "sessionEnd"]
    audio = next(
        e for e in session.events if e["event"].get("contentStart", {}).get("type") == "AUDIO"
    )
    closing = session.events[-3]["event"]["contentEnd"]
    assert closing["contentName"] == audio["event"]["contentStart"]["contentName"]
    assert session.empty_frame and session.end_stream and session.errors == []


def test_validate_names_missing_region_and_half_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    dep = Deployment(
        model_name="nova",
        provider="bedrock",
        model="amazon.nova-sonic-v1:0",
        id="v",
        params={"aws_access_key_id": Secret(KEY_ID), "endpointing_sensitivity": "max"},
    )
    problems = PROVIDER.validate(dep)
    assert len(problems) == 3
    assert any("region" in p for p in problems)


async def test_credentials_from_the_environment_chain(
    monkeypatch: pytest.MonkeyPatch, fake: FakeBedrock
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    dep = Deployment(
        model_name="nova",
        provider="bedrock",
        model="amazon.nova-sonic-v1:0",
        id="env-chain",
        api_base=fake.base_url,
        tls=TlsSettings(ca_bundle=fake.ca_bundle),
    )
    assert PROVIDER.validate(dep) == []
    with trio.fail_after(10):
        link = await PROVIDER.connect(dep, CTX)
        await link.aclose()
    assert fake.sessions[0].errors == []
