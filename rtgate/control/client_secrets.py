"""``POST /v1/realtime/client_secrets``: the HTTP side of minting a client secret.

Reads the bounded body, lets :class:`rtgate.session.client_secrets.ClientSecrets`
authorize and mint, and answers OpenAI's response shape, or an OpenAI-style
error naming the field. The log line says who minted for which group, never
the key or the secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from rtgate.errors import ClientError, InvalidParameter, RtgateError, Unauthenticated, scrub
from rtgate.session.auth import presented_key
from rtgate.session.client_secrets import MAX_REQUEST_BYTES, is_client_secret
from rtgate.session.gateway import Gateway

log = logging.getLogger("rtgate.client_secrets")

CLIENT_SECRET_PATHS = frozenset(
    {
        "/v1/realtime/client_secrets",
        "/realtime/client_secrets",
        "/openai/v1/realtime/client_secrets",
    }
)

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit`` bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


async def mint(
    gateway: Gateway, headers: Mapping[str, str], receive: Receive
) -> tuple[int, dict[str, object]]:
    """Status and JSON body of one minting request."""
    body = await read_body(receive, MAX_REQUEST_BYTES)
    if body is None:
        return 413, error_body(
            InvalidParameter(f"request body larger than {MAX_REQUEST_BYTES} bytes", param=""),
            gateway.secrets,
        )
    key = presented_key(headers, (), {})
    try:
        if is_client_secret(key):
            raise Unauthenticated("a client secret cannot mint client secrets; use an API key")
        issuer = await gateway.authenticate_key(key)
        minted = gateway.client_secrets.mint(issuer, key, body, time.time())
    except ClientError as exc:
        return exc.http_status, error_body(exc, gateway.secrets)
    log.info(
        "client secret minted: key=%s model=%s expires_at=%s",
        minted.issuer.alias, minted.model_group, minted.answer["expires_at"],
    )  # fmt: skip
    return 200, minted.answer


def error_body(exc: RtgateError, secrets: tuple[str, ...]) -> dict[str, object]:
    return {
        "error": {
            "message": scrub(exc.message, secrets),
            "type": exc.error_type,
            "code": exc.error_code,
            "param": exc.param if isinstance(exc, InvalidParameter) else None,
        }
    }
