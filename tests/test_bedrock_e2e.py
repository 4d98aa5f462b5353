"""End to end: the ``openai`` SDK -> rtgate -> fake Bedrock (HTTP/2, SigV4, event stream)."""

from __future__ import annotations

import asyncio
import base64

import trio

from rtgate.testing.fake_bedrock import FakeBedrock, FakeTurn
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, gateway_yaml

KEY_ID = "AKIDFAKEBEDROCK0001"
SECRET = "fake/secret/key"
SPEECH = base64.b64encode(b"\x10\x20" * 2400).decode()
SILENCE = base64.b64encode(b"\x00\x00" * 2400).decode()


def bedrock_deployment(fake: FakeBedrock) -> str:
    return f"""  - model_name: nova
    litellm_params:
      model: bedrock/amazon.nova-sonic-v1:0
      api_base: {fake.base_url}
      ca_bundle: {fake.ca_bundle}
      aws_access_key_id: os.environ/TEST_AWS_KEY_ID
      aws_secret_access_key: os.environ/TEST_AWS_SECRET
      aws_region_name: us-east-1
"""


def _run_openai_sdk(url: str) -> list[tuple[str, object]]:
    from openai import AsyncOpenAI

    async def session() -> list[tuple[str, object]]:
        client = AsyncOpenAI(api_key=CLIENT_KEY, websocket_base_url=url)
        seen: list[tuple[str, object]] = []
        async with client.realtime.connect(model="nova") as conn:
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "audio": {"output": {"voice": "marin"}},
                }
            )
            for chunk in (SPEECH, SPEECH, SILENCE):
                await conn.input_audio_buffer.append(audio=chunk)
            async for event in conn:
                seen.append((event.type, event))
                if event.type == "response.done":
                    break
        return seen

    return asyncio.run(asyncio.wait_for(session(), 20))


async def test_openai_sdk_talks_to_nova_sonic_through_the_gateway(nursery: trio.Nursery) -> None:
    fake = FakeBedrock(turns=[FakeTurn(transcript="hi nova", reply="Hello from Nova.")])
    await nursery.start(fake.serve)
    env = {"TEST_AWS_KEY_ID": KEY_ID, "TEST_AWS_SECRET": SECRET}
    with trio.fail_after(30):
        async with open_gateway(gateway_yaml(bedrock_deployment(fake)), env=env) as gw:
            seen = await trio.to_thread.run_sync(_run_openai_sdk, gw.ws_url + "/v1")
            with trio.move_on_after(5):
                while not fake.sessions[0].end_stream:
                    await trio.sleep(0.01)
    fake.close()
    types = [kind for kind, _ in seen]
    assert types[0] == "session.created"
    assert "session.updated" in types
    transcript = next(
        e for k, e in seen if k == "conversation.item.input_audio_transcription.completed"
    )
    assert transcript.transcript == "hi nova"  # type: ignore[attr-defined]
    assert (
        types.index("response.created")
        < types.index("response.output_audio.delta")
        < types.index("response.output_audio_transcript.done")
        < types.index("response.done")
    )
    done = seen[-1][1]
    assert done.response.status == "completed"  # type: ignore[attr-defined]
    assert done.response.usage.output_token_details.audio_tokens == 40  # type: ignore[attr-defined]
    session = fake.sessions[0]
    assert session.errors == []
    assert session.names()[:2] == ["sessionStart", "promptStart"]
    assert (
        session.events[1]["event"]["promptStart"]["audioOutputConfiguration"]["voiceId"]
        == "tiffany"
    )
    # Closed properly: the Nova closing events, then the empty signed frame and END_STREAM.
    assert session.names()[-3:] == ["contentEnd", "promptEnd", "sessionEnd"]
    assert session.empty_frame and session.end_stream
