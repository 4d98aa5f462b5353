"""Service-account OAuth2 for Vertex, and the Gemini/Vertex provider wiring."""

from __future__ import annotations

import base64
import json

import pytest
import trio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from rtgate.config.model import Deployment, Secret
from rtgate.errors import UpstreamConnectError
from rtgate.providers.base import SessionContext
from rtgate.providers.gemini import PROVIDER as GEMINI
from rtgate.providers.google_auth import (
    ServiceAccount,
    TokenSource,
    parse_token_response,
    signed_assertion,
)
from rtgate.providers.vertex import PROVIDER as VERTEX
from rtgate.testing.fake_gemini import FakeTokenEndpoint, make_service_account

CTX = SessionContext(session_id="sess_x", model_group="live")


def _decode(part: str) -> dict[str, object]:
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def test_assertion_is_an_rs256_jwt_google_would_accept() -> None:
    text, public_key = make_service_account("https://oauth2.example/token")
    account = ServiceAccount.from_json(text)
    jwt = signed_assertion(account, 1_700_000_000)
    header, claims, signature = jwt.split(".")
    assert _decode(header) == {"typ": "JWT", "alg": "RS256", "kid": "kid-1"}
    body = _decode(claims)
    assert body["iss"] == account.client_email and body["aud"] == "https://oauth2.example/token"
    assert body["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert body["exp"] == 1_700_003_600
    public_key.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        f"{header}.{claims}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    assert "PRIVATE" not in repr(account)


def test_bad_credentials_are_named_without_the_key() -> None:
    with pytest.raises(ValueError, match="private_key"):
        ServiceAccount.from_json('{"client_email": "a@b"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        ServiceAccount.from_json("{nope")
    with pytest.raises(ValueError, match="cannot read"):
        ServiceAccount.load("/nonexistent/sa.json")
    assert parse_token_response(b'{"access_token":"t","expires_in":"120"}') == ("t", 120.0)
    with pytest.raises(ValueError):
        parse_token_response(b'{"error":"x"}')


async def test_token_is_fetched_once_and_refreshed_near_expiry(nursery: trio.Nursery) -> None:
    endpoint = FakeTokenEndpoint(expires_in="400")
    await nursery.start(endpoint.serve)
    text, endpoint.public_key = make_service_account(endpoint.url)
    source = TokenSource(ServiceAccount.from_json(text))
    with trio.fail_after(10):
        first = await source.token(timeout=5)
        assert await source.token(timeout=5) == first
        assert endpoint.requests == 1
        # 400 s lifetime minus the 300 s margin: stale after 100 s.
        source._expires_at = trio.current_time() + 250
        second = await source.token(timeout=5)
    assert second != first and endpoint.requests == 2


async def test_token_endpoint_failures_are_classified(nursery: trio.Nursery) -> None:
    endpoint = FakeTokenEndpoint(fail_status=400)
    await nursery.start(endpoint.serve)
    text, _ = make_service_account(endpoint.url)
    with trio.fail_after(10):
        with pytest.raises(UpstreamConnectError) as refused:
            await TokenSource(ServiceAccount.from_json(text)).token(timeout=5)
        assert refused.value.kind == "auth"
        endpoint.fail_status, endpoint.hang = None, True
        with pytest.raises(UpstreamConnectError) as slow:
            await TokenSource(ServiceAccount.from_json(text)).token(timeout=0.3)
        assert slow.value.kind == "timeout"


def _deployment(provider: str, model: str, **params: object) -> Deployment:
    return Deployment(model_name="live", provider=provider, model=model, id="d1", params=params)


def test_studio_target_keeps_the_key_in_a_header() -> None:
    dep = Deployment(
        model_name="live",
        provider="gemini",
        model="gemini-live-2.5-flash",
        id="d",
        api_key=Secret("AIzaKEY123456789"),
    )
    target = GEMINI.target(dep, CTX)
    assert target.url == (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    assert "AIza" not in target.url and target.headers == {"x-goog-api-key": "AIzaKEY123456789"}
    assert GEMINI.validate(dep) == []
    assert GEMINI.validate(_deployment("gemini", "m")) != []
    local = Deployment(
        model_name="l", provider="gemini", model="m", id="d", api_base="http://127.0.0.1:9"
    )
    assert GEMINI.target(local, CTX).url.startswith("ws://127.0.0.1:9/ws/")


def test_vertex_target_model_path_and_validation() -> None:
    text, _ = make_service_account("https://oauth2.example/token", project_id="from-file")
    dep = _deployment(
        "vertex_ai",
        "gemini-live-2.5-flash",
        vertex_credentials=Secret(text),
        vertex_location="global",
    )
    assert VERTEX.validate(dep) == []
    assert VERTEX.target(dep, CTX).url == (
        "wss://aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
    )
    regional = _deployment(
        "vertex_ai",
        "m",
        vertex_credentials=Secret(text),
        vertex_project="p",
        vertex_location="us-east5",
    )
    assert VERTEX.target(regional, CTX).url.startswith(
        "wss://us-east5-aiplatform.googleapis.com/ws/"
    )
    translator = VERTEX.translator(dep, CTX)
    assert (
        translator.state.model_path
        == "projects/from-file/locations/global/publishers/google/models/gemini-live-2.5-flash"
    )
    assert translator.state.vertex
    problems = VERTEX.validate(_deployment("vertex_ai", "m", vertex_credentials=Secret("{}")))
    assert problems and "client_email" in problems[0]
