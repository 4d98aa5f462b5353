"""The client secret codec and the minting request parser, as plain functions (Hypothesis)."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtgate.config.load import parse_text
from rtgate.errors import InvalidParameter, Unauthenticated
from rtgate.session.client_secrets import (
    MAX_SECRET_CHARS,
    ClientSecrets,
    SecretGrant,
    parse_mint_request,
)

CONFIG_TEXT = """
model_list:
  - model_name: rt-mock
    litellm_params: {model: mock/gpt-realtime}
general_settings:
  master_key: sk-codec-master-key-0001
"""
CONFIG = parse_text(CONFIG_TEXT, path="<test>").config
OTHER_HOST = ClientSecrets(CONFIG)
CODEC = ClientSecrets(CONFIG)
NOW = 1_800_000_000.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
sessions = st.fixed_dictionaries(
    {"type": st.sampled_from(["realtime", "transcription"])},
    optional={
        "instructions": st.text(max_size=200),
        "audio": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    },
)


def grant(session: dict[str, object], expires_at: int = int(NOW) + 600) -> SecretGrant:
    return SecretGrant(
        key_digest=hashlib.sha256(b"sk-some-key").digest(),
        model_group="rt-mock",
        session=session,
        expires_at=expires_at,
    )


@given(sessions)
def test_a_sealed_grant_opens_on_any_host_with_the_same_config(session: dict[str, object]) -> None:
    sealed = CODEC.seal(grant(session))
    assert sealed.startswith("ek_") and len(sealed) <= MAX_SECRET_CHARS
    assert sealed.isascii() and all(c.isalnum() or c in "_-" for c in sealed)  # a subprotocol token
    assert OTHER_HOST.open(sealed, NOW) == grant(session)


@given(sessions, st.data())
def test_any_changed_character_is_refused(session: dict[str, object], data: st.DataObject) -> None:
    sealed = CODEC.seal(grant(session))
    index = data.draw(st.integers(3, len(sealed) - 1))
    replacement = data.draw(st.sampled_from("AQgw-_09").filter(lambda c: c != sealed[index]))
    with pytest.raises(Unauthenticated):
        CODEC.open(sealed[:index] + replacement + sealed[index + 1 :], NOW)


def test_expiry_and_another_master_key() -> None:
    sealed = CODEC.seal(grant({"type": "realtime"}, expires_at=int(NOW)))
    with pytest.raises(Unauthenticated, match="expired"):
        CODEC.open(sealed, NOW)
    assert CODEC.open(sealed, NOW - 1).expires_at == int(NOW)
    rotated = parse_text(
        CONFIG_TEXT.replace("sk-codec-master-key-0001", "sk-codec-master-key-0002"), path="<t>"
    ).config
    with pytest.raises(Unauthenticated, match="invalid client secret"):
        ClientSecrets(rotated).open(sealed, NOW - 1)


def test_a_configuration_too_large_for_a_header_is_refused_at_minting() -> None:
    noise = os.urandom(12000).hex()  # random hex does not compress below the limit
    with pytest.raises(InvalidParameter) as caught:
        CODEC.seal(grant({"type": "realtime", "instructions": noise}))
    assert caught.value.param == "session"


@given(st.binary(max_size=300) | json_values.map(lambda v: repr(v).encode()))
def test_the_parser_answers_a_field_error_or_a_request(body: bytes) -> None:
    try:
        request = parse_mint_request(body, "whisper-group")
    except InvalidParameter:
        return
    assert request.model_group and 10 <= request.seconds <= 7200
    assert "model" not in request.session


@given(json_values)
def test_any_json_session_gives_a_field_error_or_a_request(session: object) -> None:
    import orjson

    try:
        parse_mint_request(orjson.dumps({"session": session}), None)
    except InvalidParameter as exc:
        assert exc.param.startswith("session")
