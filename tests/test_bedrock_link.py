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
from rtgate.providers.bedrock import PROVIDER, BedrockProvider
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
            for frame in await self.link.receive():
                self.t.on_upstream(frame, out, trio.current_time())
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
