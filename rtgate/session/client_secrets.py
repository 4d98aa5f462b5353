"""Client secrets: rtgate's own ``ek_`` secrets, minted for a key and opened at a session's start.

A browser or phone app must not hold a long-lived key, so its backend mints a
short-lived secret (``POST /v1/realtime/client_secrets``, OpenAI's request and
response shapes) and hands it to the client, which opens sessions with it
exactly as with a key (Bearer, ``api-key``, the browser subprotocol).

A secret is a sealed token, not a row in a store: AES-256-GCM under a key that
HKDF-SHA256 derives from the master key, carrying the issuing key's sha256
(never the key), the model group, the expiry and the session configuration.
So every worker and host that loads the same config accepts it with nothing
shared between them, and nobody can forge or alter one (GCM authenticates it).
At use the gateway looks up the key behind the digest again (config keys, then
database keys): a key removed or blocked since takes its secrets
with it. Rotating the master key ends every outstanding secret.

Pure: the wall clock comes in as ``now`` (unix seconds, as ``expires_at`` is).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import zlib
from collections.abc import Mapping
from typing import Any, Final, TypeGuard

import attrs
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rtgate.config.model import GatewayConfig
from rtgate.errors import Forbidden, InvalidParameter, Unauthenticated, UnknownModel
from rtgate.session.auth import Principal
from rtgate.translate.base import new_id

PREFIX: Final = "ek_"
DEFAULT_SECONDS: Final = 600
MIN_SECONDS: Final = 10
MAX_SECONDS: Final = 7200
"""OpenAI's bounds for ``expires_after.seconds`` (10 s to 2 h, default 10 min)."""
MAX_SECRET_CHARS: Final = 8192
"""A secret travels in a request header (or a subprotocol); proxies and browsers cap those near 8 KiB."""
MAX_REQUEST_BYTES: Final = 64 * 1024

_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12
_AAD: Final = b"rtgate client secret v1"
_HKDF_INFO: Final = b"rtgate client secret key v1"

_REQUEST_FIELDS: Final = frozenset({"expires_after", "session", "model"})
_REALTIME_FIELDS: Final = frozenset(
    {
        "type",
        "audio",
        "include",
        "instructions",
        "max_output_tokens",
        "model",
        "output_modalities",
        "parallel_tool_calls",
        "prompt",
        "reasoning",
        "tool_choice",
        "tools",
        "tracing",
        "truncation",
    }
)
_TRANSCRIPTION_FIELDS: Final = frozenset({"type", "audio", "include"})


@attrs.frozen
class SecretGrant:
    """What a secret carries: who issued it, for which group and configuration, until when."""

    key_digest: bytes = attrs.field(repr=False)
    """sha256 of the issuing key (the key itself is never in a secret)."""
    model_group: str
    session: Mapping[str, Any]
    """The session configuration as minted (GA shape, ``type`` included, ``model`` removed)."""
    expires_at: int

    @property
    def intent(self) -> str | None:
        return "transcription" if self.session.get("type") == "transcription" else None

    def session_update(self) -> bytes:
        """The ``session.update`` that applies the bound configuration at a session's start."""
        return orjson.dumps({"type": "session.update", "session": dict(self.session)})


@attrs.frozen
class MintRequest:
    """A validated ``POST /v1/realtime/client_secrets`` body."""

    model_group: str
    session: Mapping[str, Any]
    seconds: int


@attrs.frozen
class Minted:
    """A minted secret: OpenAI's response body and, for the log, who minted it for what."""

    answer: dict[str, object]
    issuer: Principal
    model_group: str


def is_client_secret(value: str | None) -> TypeGuard[str]:
    return value is not None and value.startswith(PREFIX)


class ClientSecrets:
    """Mints and opens secrets for one config (a reload builds a new one)."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        master = config.master_key.value if config.master_key else None
        # Without any key nothing needs protecting (every client is admitted), so the
        # secret only carries the configuration; with virtual keys but no master key
        # there is no secret to derive from, and minting is refused.
        self._enabled = master is not None or not config.has_auth()
        material = (master or "").encode()
        self._aead = AESGCM(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(material)
        )

    # -- minting -----------------------------------------------------------------

    def mint(self, issuer: Principal, key: str | None, body: bytes, now: float) -> Minted:
        """Validate ``body`` for the authenticated ``issuer`` (who presented ``key``)."""
        if not self._enabled:
            raise Forbidden(
                "client secrets need general_settings.master_key (their encryption key is derived from it)"
            )
        request = parse_mint_request(body, self._config.server.transcription_model)
        if request.model_group not in self._groups():
            raise UnknownModel(f"model {request.model_group!r} is not served here")
        issuer.check_model(request.model_group)
        expires_at = int(now) + request.seconds
        grant = SecretGrant(
            key_digest=hashlib.sha256((key or "").encode()).digest(),
            model_group=request.model_group,
            session=request.session,
            expires_at=expires_at,
        )
        answer: dict[str, object] = {
            "value": self.seal(grant),
            "expires_at": expires_at,
            "session": _session_answer(grant),
        }
        return Minted(answer, issuer, request.model_group)

    def seal(self, grant: SecretGrant) -> str:
        payload = orjson.dumps(
            {
                "k": grant.key_digest.hex(),
                "g": grant.model_group,
                "x": grant.expires_at,
                "s": dict(grant.session),
            }
        )
        # Compressed before sealing so long instructions fit a header. The minting client
        # is the only one who sees the length, and the rest of the payload is its own.
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, zlib.compress(payload, 6), _AAD)
        value = PREFIX + base64.urlsafe_b64encode(_VERSION + nonce + sealed).rstrip(b"=").decode()
        if len(value) > MAX_SECRET_CHARS:
            raise InvalidParameter(
                f"the session configuration is too large for a client secret "
                f"({len(value)} characters sealed, at most {MAX_SECRET_CHARS})",
                param="session",
            )
        return value

    # -- use -----------------------------------------------------------------------

    def open(self, value: str, now: float) -> SecretGrant:
        """The grant inside ``value``; :class:`Unauthenticated` if forged, altered or expired."""
        if not self._enabled or len(value) > MAX_SECRET_CHARS or not value.startswith(PREFIX):
            raise Unauthenticated("invalid client secret")
        text = value[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise Unauthenticated("invalid client secret")
        # One spelling per secret: unused trailing bits must not make a second valid one.
        canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        if canonical != text or len(raw) < 1 + _NONCE_BYTES + 16 or raw[:1] != _VERSION:
            raise Unauthenticated("invalid client secret")
        try:
            plain = self._aead.decrypt(raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :], _AAD)
        except InvalidTag:
            raise Unauthenticated("invalid client secret")
        # Authenticated by GCM: only this gateway's config could have written it.
        decoded = orjson.loads(zlib.decompress(plain))
        grant = SecretGrant(
            key_digest=bytes.fromhex(decoded["k"]),
            model_group=decoded["g"],
            session=decoded["s"],
            expires_at=decoded["x"],
        )
        if now >= grant.expires_at:
            raise Unauthenticated("client secret expired; mint a new one")
        return grant

    def _groups(self) -> frozenset[str]:
        return frozenset(d.model_name for d in self._config.deployments)


# -- the request ------------------------------------------------------------------


def parse_mint_request(body: bytes, transcription_model: str | None) -> MintRequest:
    """Validate OpenAI's minting body; :class:`InvalidParameter` names the first bad field."""
    if len(body) > MAX_REQUEST_BYTES:
        raise InvalidParameter(f"request body larger than {MAX_REQUEST_BYTES} bytes", param="")
    try:
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise InvalidParameter("the request body is not valid JSON", param="")
    if not isinstance(data, dict):
        raise InvalidParameter("the request body must be a JSON object", param="")
    _no_unknown(data, _REQUEST_FIELDS, "")
    seconds = _seconds(data.get("expires_after"))
    session = data.get("session", {"type": "realtime"})
    if not isinstance(session, dict):
        raise InvalidParameter("session must be an object", param="session")
    session = dict(session)
    kind = session.setdefault("type", "realtime")
    if kind not in ("realtime", "transcription"):
        raise InvalidParameter(
            f"session.type must be 'realtime' or 'transcription', not {kind!r}",
            param="session.type",
        )
    _no_unknown(
        session, _REALTIME_FIELDS if kind == "realtime" else _TRANSCRIPTION_FIELDS, "session"
    )
    _check_session_fields(session)
    root_model = data.get("model")
    if root_model is not None and (not isinstance(root_model, str) or not root_model):
        raise InvalidParameter("model must be a non-empty string", param="model")
    group = session.pop("model", None) or root_model
    if kind == "transcription":
        group = group or _transcription_model(session) or transcription_model
    if not group:
        raise InvalidParameter(
            "session.model is required: the model group the secret opens", param="session.model"
        )
    return MintRequest(model_group=group, session=session, seconds=seconds)


def _seconds(expires_after: object) -> int:
    if expires_after is None:
        return DEFAULT_SECONDS
    if not isinstance(expires_after, dict):
        raise InvalidParameter("expires_after must be an object", param="expires_after")
    _no_unknown(expires_after, frozenset({"anchor", "seconds"}), "expires_after")
    anchor = expires_after.get("anchor", "created_at")
    if anchor != "created_at":
        raise InvalidParameter(
            f"expires_after.anchor must be 'created_at', not {anchor!r}",
            param="expires_after.anchor",
        )
    seconds = expires_after.get("seconds", DEFAULT_SECONDS)
    if type(seconds) is not int or not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InvalidParameter(
            f"expires_after.seconds must be an integer from {MIN_SECONDS} to {MAX_SECONDS}",
            param="expires_after.seconds",
        )
    return seconds


def _check_session_fields(session: dict[str, Any]) -> None:
    checks: dict[str, tuple[tuple[type, ...], str]] = {
        "model": ((str,), "a string"),
        "instructions": ((str,), "a string"),
        "audio": ((dict,), "an object"),
        "tools": ((list,), "an array"),
        "include": ((list,), "an array"),
        "output_modalities": ((list,), "an array"),
        "parallel_tool_calls": ((bool,), "a boolean"),
        "reasoning": ((dict,), "an object"),
        "tool_choice": ((str, dict), "a string or an object"),
        "truncation": ((str, dict), "a string or an object"),
        "tracing": ((str, dict, type(None)), "'auto', an object or null"),
        "prompt": ((dict, type(None)), "an object or null"),
    }
    for name, (types, what) in checks.items():
        if name in session and not isinstance(session[name], types):
            raise InvalidParameter(f"session.{name} must be {what}", param=f"session.{name}")
    for index, tool in enumerate(session.get("tools", ())):
        if not isinstance(tool, dict) or not isinstance(tool.get("type", "function"), str):
            raise InvalidParameter(
                f"session.tools[{index}] must be a tool object", param=f"session.tools[{index}]"
            )
    for modality in session.get("output_modalities", ()):
        if modality not in ("text", "audio"):
            raise InvalidParameter(
                f"session.output_modalities may hold 'text' and 'audio', not {modality!r}",
                param="session.output_modalities",
            )
    if "max_output_tokens" in session:
        limit = session["max_output_tokens"]
        if limit != "inf" and (type(limit) is not int or not 1 <= limit <= 4096):
            raise InvalidParameter(
                "session.max_output_tokens must be an integer from 1 to 4096 or 'inf'",
                param="session.max_output_tokens",
            )


def _no_unknown(obj: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
    for name in obj:
        if name not in allowed:
            field = f"{where}.{name}" if where else name
            raise InvalidParameter(f"unknown parameter {field!r}", param=field)


def _transcription_model(session: Mapping[str, Any]) -> str | None:
    audio = session.get("audio")
    source = audio.get("input") if isinstance(audio, dict) else None
    transcription = source.get("transcription") if isinstance(source, dict) else None
    model = transcription.get("model") if isinstance(transcription, dict) else None
    return model if isinstance(model, str) and model else None


def _session_answer(grant: SecretGrant) -> dict[str, object]:
    """The ``session`` of OpenAI's response: the bound configuration with its identity."""
    session = dict(grant.session)
    if session["type"] == "transcription":
        return {"id": new_id("sess"), "object": "realtime.transcription_session", **session}
    return {
        "id": new_id("sess"),
        "object": "realtime.session",
        **session,
        "model": grant.model_group,
    }
