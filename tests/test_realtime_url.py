"""``api_base`` is joined as LiteLLM joins it, for every spelling a LiteLLM config may use.

The tables go through each provider's ``target`` (what the dial uses), so they
check the wiring as well as :mod:`rtgate.providers.realtime_url`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtgate.config.model import Deployment, Secret
from rtgate.edge.configfile import parse_text
from rtgate.errors import ConfigError
from rtgate.providers.azure import PROVIDER as AZURE
from rtgate.providers.base import SessionContext
from rtgate.providers.openai import PROVIDER as OPENAI
from rtgate.providers.realtime_url import api_base_problems, merge_query, openai_realtime_url
from rtgate.providers.xai import PROVIDER as XAI

CONVERSATION = SessionContext(session_id="s", model_group="g")
TRANSCRIPTION = SessionContext(session_id="s", model_group="g", intent="transcription")


def deployment(provider: str, model: str, api_base: str | None, **params: object) -> Deployment:
    return Deployment(
        model_name="g",
        provider=provider,
        model=model,
        id="d",
        api_key=Secret("sk-upstream-000000"),
        api_base=api_base,
        api_version=str(params.pop("api_version")) if "api_version" in params else None,
        params=params,
    )


OPENAI_URL = "wss://api.openai.com/v1/realtime?model=gpt-realtime"
LOCAL_URL = "ws://127.0.0.1:8080/v1/realtime?model=gpt-realtime"

OPENAI_SPELLINGS = [
    (None, OPENAI_URL),
    ("https://api.openai.com", OPENAI_URL),
    ("https://api.openai.com/", OPENAI_URL),
    ("https://api.openai.com/v1", OPENAI_URL),
    ("https://api.openai.com/v1/", OPENAI_URL),
    ("https://api.openai.com/v1//", OPENAI_URL),
    ("https://api.openai.com/v1/realtime", OPENAI_URL),
    ("https://api.openai.com/v1/realtime/", OPENAI_URL),
    ("wss://api.openai.com", OPENAI_URL),
    ("wss://api.openai.com/v1", OPENAI_URL),
    ("wss://api.openai.com/v1/realtime", OPENAI_URL),
    ("http://127.0.0.1:8080", LOCAL_URL),
    ("http://127.0.0.1:8080/", LOCAL_URL),
    ("http://127.0.0.1:8080/v1", LOCAL_URL),
    ("http://127.0.0.1:8080/v1/realtime", LOCAL_URL),
    ("ws://127.0.0.1:8080", LOCAL_URL),
    ("ws://127.0.0.1:8080/v1/", LOCAL_URL),
    ("ws://127.0.0.1:8080/v1/realtime/", LOCAL_URL),
    # A proxy prefix is kept and gets the whole /v1/realtime.
    ("https://my-proxy.example", "wss://my-proxy.example/v1/realtime?model=gpt-realtime"),
    ("https://gw.example/openai", "wss://gw.example/openai/v1/realtime?model=gpt-realtime"),
    ("https://gw.example/team/v1", "wss://gw.example/team/v1/realtime?model=gpt-realtime"),
    # Query strings on api_base are kept, after the session's own parameters.
    ("https://gw.example/v1?team=voice", "wss://gw.example/v1/realtime?model=gpt-realtime&team=voice"),
    ("https://gw.example/v1/?team=voice", "wss://gw.example/v1/realtime?model=gpt-realtime&team=voice"),
    ("http://gw.example?a=1&a=2", "ws://gw.example/v1/realtime?model=gpt-realtime&a=1&a=2"),
    ("wss://gw.example/v1/realtime?x=&y=2", "wss://gw.example/v1/realtime?model=gpt-realtime&x=&y=2"),
    # A key given on api_base keeps api_base's value (httpx's QueryParams.merge, as LiteLLM).
    ("https://gw.example/v1?model=pinned&b=1", "wss://gw.example/v1/realtime?model=pinned&b=1"),
    # Credentials and ports in the authority are left alone.
    ("https://u:p@gw.example:8443/v1", "wss://u:p@gw.example:8443/v1/realtime?model=gpt-realtime"),
]  # fmt: skip


@pytest.mark.parametrize(("api_base", "url"), OPENAI_SPELLINGS)
def test_openai_api_base_spellings(api_base: str | None, url: str) -> None:
    dep = deployment("openai", "gpt-realtime", api_base)
    assert OPENAI.target(dep, CONVERSATION).url == url
    assert OPENAI.validate(dep) == []


@pytest.mark.parametrize(
    ("api_base", "url"),
    [
        (None, "wss://api.openai.com/v1/realtime?intent=transcription"),
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/v1/realtime?intent=transcription"),
        ("https://gw.example/v1/?t=1", "wss://gw.example/v1/realtime?intent=transcription&t=1"),
    ],
)
def test_openai_transcription_sessions_send_intent_and_no_model(
    api_base: str | None, url: str
) -> None:
    assert OPENAI.target(deployment("openai", "gpt-realtime", api_base), TRANSCRIPTION).url == url


XAI_URL = "wss://api.x.ai/v1/realtime?model=grok-voice-latest"


@pytest.mark.parametrize(
    ("api_base", "url"),
    [
        (None, XAI_URL),
        ("https://api.x.ai", XAI_URL),
        ("https://api.x.ai/", XAI_URL),
        ("https://api.x.ai/v1", XAI_URL),
        ("https://api.x.ai/v1/", XAI_URL),
        ("https://api.x.ai/v1/realtime", XAI_URL),
        ("wss://api.x.ai/v1", XAI_URL),
        ("wss://api.x.ai/v1/realtime/", XAI_URL),
        ("http://127.0.0.1:9000", "ws://127.0.0.1:9000/v1/realtime?model=grok-voice-latest"),
        ("ws://127.0.0.1:9000/v1", "ws://127.0.0.1:9000/v1/realtime?model=grok-voice-latest"),
        ("https://api.x.ai/v1?r=eu", "wss://api.x.ai/v1/realtime?model=grok-voice-latest&r=eu"),
    ],
)
def test_xai_api_base_spellings(api_base: str | None, url: str) -> None:
    dep = deployment("xai", "grok-voice-latest", api_base)
    assert XAI.target(dep, CONVERSATION).url == url
    assert XAI.validate(dep) == []


AZURE_GA = "wss://res.openai.azure.com/openai/v1/realtime?model=my-deploy"
AZURE_PREVIEW = (
    "wss://res.openai.azure.com/openai/realtime?api-version=2024-10-01-preview&deployment=my-deploy"
)


@pytest.mark.parametrize(
    ("api_base", "url"),
    [
        ("https://res.openai.azure.com", AZURE_GA),
        ("https://res.openai.azure.com/", AZURE_GA),
        ("https://res.openai.azure.com/openai", AZURE_GA),
        ("https://res.openai.azure.com/openai/", AZURE_GA),
        ("https://res.openai.azure.com/openai/v1", AZURE_GA),
        ("https://res.openai.azure.com/openai/v1/", AZURE_GA),
        ("https://res.openai.azure.com/openai/v1/realtime", AZURE_GA),
        ("https://res.openai.azure.com/openai/realtime", AZURE_GA),
        ("wss://res.openai.azure.com", AZURE_GA),
        ("wss://res.openai.azure.com/openai/v1/", AZURE_GA),
        ("http://127.0.0.1:7000", "ws://127.0.0.1:7000/openai/v1/realtime?model=my-deploy"),
        ("ws://127.0.0.1:7000/openai/", "ws://127.0.0.1:7000/openai/v1/realtime?model=my-deploy"),
        # An API-management prefix before /openai is kept.
        ("https://apim.example/voice", "wss://apim.example/voice/openai/v1/realtime?model=my-deploy"),
        ("https://apim.example/voice/openai/v1", "wss://apim.example/voice/openai/v1/realtime?model=my-deploy"),
        ("https://res.openai.azure.com/?sub=1", AZURE_GA + "&sub=1"),
    ],
)  # fmt: skip
def test_azure_ga_api_base_spellings(api_base: str, url: str) -> None:
    dep = deployment("azure", "my-deploy", api_base)
    assert AZURE.target(dep, CONVERSATION).url == url
    assert AZURE.validate(dep) == []


@pytest.mark.parametrize(
    ("api_base", "params", "url"),
    [
        ("https://res.openai.azure.com", {"realtime_path": "preview"}, AZURE_PREVIEW),
        ("https://res.openai.azure.com/", {"realtime_path": "preview"}, AZURE_PREVIEW),
        ("https://res.openai.azure.com/openai", {"realtime_path": "preview"}, AZURE_PREVIEW),
        ("https://res.openai.azure.com/openai/realtime/", {"realtime_path": "preview"}, AZURE_PREVIEW),
        # LiteLLM's own switch: realtime_protocol beta is the preview path, GA/v1 the GA path.
        ("https://res.openai.azure.com", {"realtime_protocol": "beta"}, AZURE_PREVIEW),
        ("https://res.openai.azure.com", {"realtime_protocol": "GA"}, AZURE_GA),
        ("https://res.openai.azure.com", {"realtime_protocol": "v1"}, AZURE_GA),
        # An api-version on api_base wins over api_version, as any key given on api_base.
        (
            "https://res.openai.azure.com?api-version=2025-04-01-preview",
            {"realtime_path": "preview"},
            AZURE_PREVIEW.replace("2024-10-01-preview", "2025-04-01-preview"),
        ),
    ],
)  # fmt: skip
def test_azure_preview_path_and_its_api_version_and_deployment(
    api_base: str, params: dict[str, object], url: str
) -> None:
    dep = deployment("azure", "my-deploy", api_base, api_version="2024-10-01-preview", **params)
    assert AZURE.target(dep, CONVERSATION).url == url
    assert AZURE.validate(dep) == []


def test_azure_transcription_takes_the_ga_path_even_when_preview_is_set() -> None:
    dep = deployment(
        "azure",
        "whisper",
        "https://res.openai.azure.com/",
        api_version="x",
        realtime_path="preview",
    )
    url = AZURE.target(dep, TRANSCRIPTION).url
    assert url == "wss://res.openai.azure.com/openai/v1/realtime?intent=transcription"


@pytest.mark.parametrize(
    ("api_base", "problem"),
    [
        ("api.openai.com", "must start with https://, http://, wss:// or ws://"),
        ("api.openai.com/v1", "must start with https://, http://, wss:// or ws://"),
        ("ftp://api.openai.com", "must start with https://, http://, wss:// or ws://"),
        ("https://", "has no host"),
        ("https:///v1", "has no host"),
        ("https://api.openai.com/v1#x", "must not have a #fragment"),
    ],
)
def test_api_bases_that_cannot_be_dialed_are_refused(api_base: str, problem: str) -> None:
    for provider, model in ((OPENAI, "gpt-realtime"), (XAI, "grok"), (AZURE, "d")):
        problems = provider.validate(deployment(provider.name, model, api_base))
        assert any(problem in p for p in problems), (provider.name, problems)


def test_a_bad_api_base_is_a_config_error_with_its_line() -> None:
    text = """model_list:
  - model_name: gpt-realtime
    litellm_params:
      model: openai/gpt-realtime
      api_key: sk-upstream-000000
      api_base: api.openai.com/v1
"""
    with pytest.raises(ConfigError) as info:
        parse_text(text, path="c.yaml", env={})
    assert "c.yaml:2" in str(info.value)
    assert "must start with https://" in str(info.value)


def test_an_unknown_realtime_protocol_is_refused() -> None:
    dep = deployment("azure", "d", "https://res.openai.azure.com", realtime_protocol="v2")
    assert any("realtime_protocol" in p for p in AZURE.validate(dep))


# Any spelling of one endpoint dials one URL.
hosts = st.sampled_from(["api.openai.com", "127.0.0.1:8080", "gw.example:443", "[::1]:9"])
prefixes = st.sampled_from(["", "/proxy", "/a/b"])
schemes = st.sampled_from([("http", "ws"), ("https", "wss"), ("ws", "ws"), ("wss", "wss")])
suffixes = st.sampled_from(["", "/v1", "/v1/realtime"])
slashes = st.sampled_from(["", "/", "//"])
keys = st.text("abcxyz-_", min_size=1, max_size=4)
values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
pairs = st.lists(st.tuples(keys, values), max_size=4)


@given(hosts, prefixes, schemes, suffixes, slashes)
def test_every_spelling_of_an_endpoint_dials_the_same_url(
    host: str, prefix: str, scheme: tuple[str, str], suffix: str, slash: str
) -> None:
    given_scheme, ws_scheme = scheme
    query = [("model", "m")]
    url = openai_realtime_url(f"{given_scheme}://{host}{prefix}{suffix}{slash}", query)
    assert url == f"{ws_scheme}://{host}{prefix}/v1/realtime?model=m"
    assert api_base_problems(f"{given_scheme}://{host}{prefix}{suffix}{slash}") == []


@given(pairs, pairs)
def test_merge_keeps_every_base_parameter_and_every_session_key(
    session: list[tuple[str, str]], on_base: list[tuple[str, str]]
) -> None:
    merged = parse_qsl(merge_query(session, urlencode(on_base)), keep_blank_values=True)

    def values(pairs: list[tuple[str, str]], key: str) -> list[str]:
        return [v for k, v in pairs if k == key]

    base_keys = {k for k, _ in on_base}
    for key in {k for k, _ in session} | base_keys:
        source = on_base if key in base_keys else session
        assert values(merged, key) == values(source, key)
    first_seen = list(dict.fromkeys(k for k, _ in [*session, *on_base]))
    assert list(dict.fromkeys(k for k, _ in merged)) == first_seen


def test_the_url_has_no_fragment_and_the_base_query_is_not_in_the_path() -> None:
    url = openai_realtime_url("https://gw.example/v1/?a=1", [("model", "m")])
    parts = urlsplit(url)
    assert (parts.path, parts.query, parts.fragment) == ("/v1/realtime", "model=m&a=1", "")
