"""WebRTC calls the provider terminates (OpenAI, Azure), end to end against the fake's calls API.

The openai SDK posts the offer to rtgate; rtgate must post it to the deployment the pool
picked with the deployment's own key and model, answer with the provider's SDP and a
``Location`` of its own, and follow the call on the sideband: the call's responses are
logged and billed to the key that placed it, its slots are held while it runs, and every
way it ends (hang-up at rtgate, the provider ending it, the gateway stopping) releases
them, with the provider told to hang up unless it ended the call itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from rtgate.config.load import parse_text
from rtgate.telemetry.eventlog import EventLogger
from rtgate.testing.fake_upstream import FAKE_ANSWER, FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.governance_support import PRICES, api, wait_for
from tests.test_calls_route import OFFER, http_request, multipart
from tests.test_client_secrets import mint

SPOKEN = [
    orjson.dumps(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello"}],
            },
        }
    ),
    b'{"type":"response.create"}',
]
"""What the user's side of a call sends on its data channel for one response (fake-driven)."""


def config(*deployments: FakeRealtimeServer, extra: str = "", max_sessions: int = 1) -> str:
    prices = "".join(f"\n      {k}: {v!r}" for k, v in PRICES.items())
    entries = []
    for index, fake in enumerate(deployments):
        if fake.flavour == "azure":
            params = f"""      model: azure/voice-deployment
      api_key: {fake.api_key}
      api_base: {fake.base_url}"""
        else:
            params = f"""      model: openai/gpt-realtime
      api_key: {fake.api_key}
      api_base: {fake.base_url}"""
        entries.append(f"""  - model_name: gpt-realtime
    litellm_params:
{params}
    model_info:
      id: dep-{index}
      mode: realtime{prices}""")
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
    drain_seconds: 1
  governance:
    key_refresh_seconds: 0.5
    spend_flush_interval: 0.01
  keys:
    - alias: web
      key: sk-web-app-key-00000001
      models: [gpt-realtime]
      max_sessions: {max_sessions}
{extra}
"""


WEB_KEY = "sk-web-app-key-00000001"


def sdk_call(http_url: str, key: str, session: dict[str, Any] | None = None) -> dict[str, Any]:
    """Place a call with the openai SDK (its multipart shape); the answer and Location."""
    from openai import AsyncOpenAI

    async def run() -> dict[str, Any]:
        async with AsyncOpenAI(api_key=key, base_url=http_url + "/v1", max_retries=0) as client:
            raw = await client.realtime.calls.with_raw_response.create(
                sdp=OFFER, session=session or {"type": "realtime", "model": "gpt-realtime"}
            )
            return {
                "status": raw.status_code,
                "location": raw.headers.get("location"),
                "answer": raw.content.decode(),
            }

    return asyncio.run(asyncio.wait_for(run(), 20))


async def post_offer(
    port: int, key: str, *, query: str = "?model=gpt-realtime", form: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """A raw ``POST /v1/realtime/calls``: the bare SDP, or a form with only ``sdp``."""
    if form:
        body, kind = multipart({"sdp": OFFER.encode()})
    else:
        body, kind = OFFER.encode(), "application/sdp"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": kind}
    return await http_request(port, "POST", "/v1/realtime/calls" + query, body, headers)


def sdk_hang_up(http_url: str, key: str, call_id: str) -> None:
    """``client.realtime.calls.hangup`` of the openai SDK, against rtgate."""
    from openai import AsyncOpenAI

    async def run() -> None:
        async with AsyncOpenAI(api_key=key, base_url=http_url + "/v1", max_retries=0) as client:
            await client.realtime.calls.hangup(call_id)

    asyncio.run(asyncio.wait_for(run(), 20))


def only_call(fake: FakeRealtimeServer) -> str:
    (call_id,) = fake.calls
    return call_id


async def test_a_call_is_forwarded_followed_billed_and_hung_up(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(fake.serve)
    log_path = tmp_path / "events.jsonl"
    yaml = config(
        fake,
        extra=f"""  event_log:
    flush_interval: 0.05
    sinks:
      - {{type: file, path: {log_path}}}""",
    )
    parsed = parse_text(yaml, path="<test>").config
    logger = EventLogger.for_config(parsed)
    assert logger is not None
    with trio.fail_after(40):
        async with open_gateway(parsed, event_log=logger) as gw:
            _, created = await api(gw.http_url, "POST", "/key/generate", {"key_alias": "browser"})
            key = created["key"]
            placed = await trio.to_thread.run_sync(sdk_call, gw.http_url, key)
            assert placed["status"] == 201
            assert placed["answer"] == FAKE_ANSWER
            ours = placed["location"]
            assert ours.startswith("/v1/realtime/calls/rtc_")
            # The provider got the offer with the deployment's key and model, not the client's.
            method, path, headers = fake.call_requests[0]
            assert (method, path) == ("POST", "/v1/realtime/calls")
            assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
            call_id = only_call(fake)
            call = fake.calls[call_id]
            assert call.offer == OFFER and call.session["model"] == "gpt-realtime"
            await wait_for(lambda: _true(call.sidebands == 1))
            assert gw.gateway.counters.sessions_active == 1
            # The user speaks (on the call's data channel): the sideband carries the response,
            # and the key that placed the call pays for it.
            for event in SPOKEN:
                fake.call_event(call_id, event)

            async def charged() -> bool:
                _, info = await api(gw.http_url, "GET", f"/key/info?key={key}")
                return bool(info["info"]["spend"] > 0)

            await wait_for(charged)
            # Only the key that placed the call (or the master key) hangs it up.
            status, _, _ = await http_request(
                gw.port, "DELETE", ours, b"", {"Authorization": f"Bearer {WEB_KEY}"}
            )
            assert status == 404
            status, _, _ = await http_request(
                gw.port, "DELETE", ours, b"", {"Authorization": f"Bearer {key}"}
            )
            assert status == 200
            await wait_for(lambda: _true(call.hung_up))
            assert fake.call_requests[-1][:2] == ("POST", f"/v1/realtime/calls/{call_id}/hangup")
            assert fake.call_requests[-1][2]["authorization"] == f"Bearer {UPSTREAM_KEY}"
            await wait_for(lambda: _true(gw.gateway.counters.sessions_active == 0))
            assert len(gw.gateway.calls) == 0
            while logger.counters.sessions_queued == 0:
                await trio.sleep(0.01)
    records = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]
    (record,) = [r for r in records if r["record"] == "session"]
    assert record["key_alias"] == "browser" and record["closed_by"] == "client"
    assert record["responses"] == 1 and record["cost_usd"] > 0
    text = log_path.read_text()
    assert UPSTREAM_KEY not in text and key not in text


async def test_the_provider_ending_a_call_frees_its_slot_without_a_hang_up(
    nursery: trio.Nursery,
) -> None:
    fake = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(fake.serve)
    with trio.fail_after(30):
        async with open_gateway(config(fake)) as gw:
            first = await trio.to_thread.run_sync(sdk_call, gw.http_url, WEB_KEY)
            assert first["status"] == 201
            # The key's one slot is taken: a second call is refused before any post.
            status, _, _ = await post_offer(gw.port, WEB_KEY, form=True)
            assert status == 429 and len(fake.call_requests) == 1
            call = fake.calls[only_call(fake)]
            await wait_for(lambda: _true(call.sidebands == 1))
            fake.end_call(call.call_id)
            await wait_for(lambda: _true(gw.gateway.counters.sessions_active == 0))
            assert not call.hung_up  # the provider ended it: nothing to hang up
            assert all(not path.endswith("/hangup") for _, path, _ in fake.call_requests)
            again = await trio.to_thread.run_sync(sdk_call, gw.http_url, WEB_KEY)
            assert again["status"] == 201


async def test_a_refused_offer_fails_over_and_teaches_the_pool(nursery: trio.Nursery) -> None:
    broken = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    healthy = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    for fake in (broken, healthy):
        await nursery.start(fake.serve)
    broken.behaviour.reject_status = 503
    with trio.fail_after(30):
        async with open_gateway(config(broken, healthy)) as gw:
            for _ in range(2):
                placed = await trio.to_thread.run_sync(sdk_call, gw.http_url, CLIENT_KEY)
                assert placed["status"] == 201
            assert len(healthy.calls) == 2
            # The broken deployment was tried once and the pool learned it failed.
            assert len(broken.call_requests) == 1
            _, pool = await api(gw.http_url, "GET", "/admin/pool")
            assert pool["dep-0"]["consecutive_failures"] == 1
            assert pool["dep-0"]["last_error"] == "rejected"
            assert pool["dep-1"]["active_sessions"] == 2


async def test_azure_calls_use_the_resource_path_the_api_key_and_the_deployment_name(
    nursery: trio.Nursery,
) -> None:
    fake = FakeRealtimeServer(api_key="azure-fake-key-0001", flavour="azure")
    await nursery.start(fake.serve)
    with trio.fail_after(30):
        async with open_gateway(config(fake)) as gw:
            placed = await trio.to_thread.run_sync(sdk_call, gw.http_url, WEB_KEY)
            assert placed["status"] == 201 and placed["answer"] == FAKE_ANSWER
            method, path, headers = fake.call_requests[0]
            assert (method, path) == ("POST", "/openai/v1/realtime/calls")
            assert headers["api-key"] == "azure-fake-key-0001"
            assert "authorization" not in headers
            call = fake.calls[only_call(fake)]
            assert call.session["model"] == "voice-deployment"
            await wait_for(lambda: _true(call.sidebands == 1))
            assert any(p.startswith("/openai/v1/realtime?call_id=rtc_fake1") for p in fake.paths)
            status, _, text = await http_request(
                gw.port, "GET", "/metrics", b"", {"Authorization": f"Bearer {CLIENT_KEY}"}
            )
            assert status == 200
            assert b'rtgate_webrtc_calls_active{media="forwarded"} 1.0' in text
            assert b'rtgate_webrtc_calls_active{media="terminated"} 0.0' in text
        # The gateway stopped with the call running: the call was hung up at the provider.
        assert call.hung_up


async def test_a_client_secret_places_a_call_with_its_bound_configuration(
    nursery: trio.Nursery,
) -> None:
    fake = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(fake.serve)
    with trio.fail_after(30):
        async with open_gateway(config(fake)) as gw:
            status, minted = await mint(
                gw.port,
                {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief."},
                WEB_KEY,
            )
            assert status == 200, minted
            status, headers, answer = await post_offer(gw.port, minted["value"], query="")
            assert status == 201 and answer.decode() == FAKE_ANSWER, answer
            assert headers["location"].startswith("/v1/realtime/calls/rtc_")
            call = fake.calls[only_call(fake)]
            assert call.session == {"type": "realtime", "model": "gpt-realtime"}

            def configured() -> bool:
                updates = [orjson.loads(f) for f in fake.received if b"session.update" in f]
                return any(u["session"].get("instructions") == "Be brief." for u in updates)

            await wait_for(lambda: _true(configured()))
            # The secret opened a session for the key that minted it: its one slot is held.
            status, _, _ = await post_offer(gw.port, WEB_KEY)
            assert status == 429
            # The key that minted the secret hangs the call up with the SDK's own method.
            ours = headers["location"].rsplit("/", 1)[1]
            await trio.to_thread.run_sync(sdk_hang_up, gw.http_url, WEB_KEY, ours)
            await wait_for(lambda: _true(call.hung_up))
            await wait_for(lambda: _true(gw.gateway.counters.sessions_active == 0))


async def _true(value: bool) -> bool:
    return value


def test_the_calls_endpoint_follows_api_base_as_the_realtime_url_does() -> None:
    """The providers' own calls endpoints: ``api_base`` joined as for the realtime URL,
    over HTTP(S); Azure's preview path has none."""
    from rtgate.config.model import Deployment
    from rtgate.providers.azure import PROVIDER as AZURE
    from rtgate.providers.base import SessionContext
    from rtgate.providers.openai import PROVIDER as OPENAI

    ctx = SessionContext(session_id="s", model_group="g")

    def endpoint(provider: Any, base: str | None, **params: Any) -> str | None:
        deployment = Deployment(
            id="d", model_name="g", provider=provider.name, model="m", api_base=base, **params
        )
        found = provider.call_endpoint(deployment, ctx)
        return None if found is None else str(found.calls_url)

    assert endpoint(OPENAI, None) == "https://api.openai.com/v1/realtime/calls"
    assert endpoint(OPENAI, "https://proxy.example/llm/") == (
        "https://proxy.example/llm/v1/realtime/calls"
    )
    assert endpoint(OPENAI, "http://10.0.0.2:8080/v1?team=a") == (
        "http://10.0.0.2:8080/v1/realtime/calls?team=a"
    )
    assert endpoint(AZURE, "https://r.openai.azure.com/openai") == (
        "https://r.openai.azure.com/openai/v1/realtime/calls"
    )
    preview = {"params": {"realtime_path": "preview"}, "api_version": "2025-04-01-preview"}
    assert endpoint(AZURE, "https://r.openai.azure.com", **preview) is None


def test_the_posted_offer_round_trips_through_the_offer_parser() -> None:
    from rtgate.config.model import Deployment
    from rtgate.control.calls import parse_offer
    from rtgate.providers.base import CallOffer
    from rtgate.providers.provider_calls import call_session, form_data, provider_call_id

    deployment = Deployment(id="d", model_name="g", provider="openai", model="gpt-realtime")
    session = call_session(CallOffer(OFFER, {"model": "g", "instructions": "hi"}), deployment)
    assert session == {"model": "gpt-realtime", "instructions": "hi", "type": "realtime"}
    transcription = call_session(
        CallOffer(OFFER, {"type": "transcription", "model": "g"}), deployment
    )
    assert "model" not in transcription
    kind, body = form_data(
        [
            ("sdp", "application/sdp", OFFER.encode()),
            ("session", "application/json", orjson.dumps(session)),
        ]
    )
    assert parse_offer(kind, body) == (OFFER, session)
    assert provider_call_id("/v1/realtime/calls/rtc_abc") == "rtc_abc"
    assert provider_call_id("https://api.openai.com/v1/realtime/calls/rtc_abc/") == "rtc_abc"
    assert provider_call_id("") is None and provider_call_id(None) is None


async def test_groups_without_a_calls_endpoint_everywhere_are_terminated_here(
    nursery: trio.Nursery,
) -> None:
    from rtgate.control.calls import handler_for

    fake = FakeRealtimeServer(api_key="azure-fake-key-0001", flavour="azure")
    await nursery.start(fake.serve)
    preview = f"""
  - model_name: azure-preview
    litellm_params:
      model: azure/voice-deployment
      api_key: {fake.api_key}
      api_base: {fake.base_url}
      api_version: "2025-04-01-preview"
      realtime_path: preview
  - model_name: mixed
    litellm_params:
      model: openai/gpt-realtime
      api_key: {UPSTREAM_KEY}
      api_base: {fake.base_url}
  - model_name: mixed
    litellm_params:
      model: mock/gpt-realtime"""
    yaml = config(fake).replace("general_settings:", preview.lstrip("\n") + "\ngeneral_settings:")
    with trio.fail_after(20):
        async with open_gateway(yaml) as gw:
            calls = gw.gateway.calls
            assert handler_for(gw.gateway, "gpt-realtime") is calls.forward
            assert handler_for(gw.gateway, "azure-preview") is calls.terminate
            assert handler_for(gw.gateway, "mixed") is calls.terminate


async def test_a_sideband_that_cannot_open_hangs_the_provider_call_up(
    nursery: trio.Nursery,
) -> None:
    fake = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(fake.serve)
    fake.behaviour.sideband_status = 503
    with trio.fail_after(20):
        async with open_gateway(config(fake)) as gw:
            status, _, answer = await post_offer(gw.port, WEB_KEY, form=True)
            assert status >= 500 and b"v=0" not in answer
            call = fake.calls[only_call(fake)]
            assert call.hung_up  # the provider does not keep a call nobody follows
            assert gw.gateway.counters.sessions_active == 0
            fake.behaviour.sideband_status = None
            again = await trio.to_thread.run_sync(sdk_call, gw.http_url, WEB_KEY)
            assert again["status"] == 201  # the key's one slot came back


SDP_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, blacklist_characters="\r\n"),
    max_size=60,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(SDP_TEXT, max_size=12),
    session=st.dictionaries(st.text(min_size=1, max_size=12), JSON_VALUES, max_size=6),
)
def test_any_offer_and_session_survive_the_posted_form(
    lines: list[str], session: dict[str, Any]
) -> None:
    """What rtgate posts to a provider parses back (by the same reader rtgate's own route
    uses) to the offer and session it was built from, whatever their text."""
    from rtgate.control.calls import parse_offer
    from rtgate.providers.provider_calls import form_data

    sdp = (
        "v=0\r\n" + "".join(line + "\r\n" for line in lines) + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    )
    kind, body = form_data(
        [
            ("sdp", "application/sdp", sdp.encode()),
            ("session", "application/json", orjson.dumps(session)),
        ]
    )
    assert parse_offer(kind, body) == (sdp, session)
