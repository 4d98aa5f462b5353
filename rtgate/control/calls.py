"""``/v1/realtime/calls``: the HTTP side of WebRTC calls (offer in, SDP answer out, hang-up).

``POST`` takes OpenAI's two request shapes: a bare SDP offer (``Content-Type:
application/sdp``) or a multipart form with an ``sdp`` field and an optional ``session``
JSON field. It is authorized like a WebSocket session (a key or an ``ek_`` client
secret), picks the path by the model group's providers and answers ``201`` with the SDP
answer and ``Location: /v1/realtime/calls/{call_id}``:

* every deployment is OpenAI or Azure: the provider terminates the media; rtgate posts the
  offer to the deployment the pool picked (failover applies) and keeps the call's sideband
  socket (:attr:`CallRegistry.forward`);
* otherwise rtgate terminates the media itself and feeds the group's translator
  (:attr:`CallRegistry.terminate`).

``DELETE /v1/realtime/calls/{id}`` and ``POST /v1/realtime/calls/{id}/hangup`` end a
call; only the key that started it, or the master key, may.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from rtgate.control.client_secrets import Receive, error_body, read_body
from rtgate.errors import BadRequest, ClientError, InvalidParameter, RtgateError, UnknownModel
from rtgate.session.auth import presented_key
from rtgate.session.calls import CallHandler
from rtgate.session.forwarded_calls import takes_calls
from rtgate.session.gateway import Gateway

log = logging.getLogger("rtgate.calls")

CALLS_PATHS = ("/v1/realtime/calls", "/realtime/calls", "/openai/v1/realtime/calls")
MAX_OFFER_BYTES = 256 * 1024
"""An SDP offer is a few KiB; the session object is bounded like a client secret's."""


def calls_route(path: str) -> tuple[str, str | None, str | None] | None:
    """``(prefix, call_id, action)`` for a calls path, else None."""
    for prefix in CALLS_PATHS:
        if path == prefix:
            return prefix, None, None
        if path.startswith(prefix + "/"):
            rest = path[len(prefix) + 1 :].split("/")
            if len(rest) == 1 and rest[0]:
                return prefix, rest[0], None
            if len(rest) == 2 and rest[0] and rest[1] == "hangup":
                return prefix, rest[0], "hangup"
    return None


def parse_offer(content_type: str, body: bytes) -> tuple[str, dict[str, Any] | None]:
    """The SDP offer and the optional ``session`` object of a ``POST`` body."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/sdp":
        sdp, session = _text(body, "sdp"), None
    elif kind == "multipart/form-data":
        sdp, session = _multipart(content_type, body)
    else:
        raise InvalidParameter(
            "send the offer as application/sdp, or as multipart/form-data with an 'sdp' field",
            param="sdp",
        )
    if not sdp.lstrip().startswith("v=0"):
        raise InvalidParameter("the SDP offer must start with 'v=0'", param="sdp")
    if "m=audio" not in sdp:
        raise InvalidParameter("the SDP offer has no audio media section", param="sdp")
    return sdp, session


def _multipart(content_type: str, body: bytes) -> tuple[str, dict[str, Any] | None]:
    # The stdlib MIME parser reads form-data (RFC 7578 is MIME multipart).
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise InvalidParameter("malformed multipart/form-data body", param="sdp")
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload
    if "sdp" not in fields:
        raise InvalidParameter("the form has no 'sdp' field", param="sdp")
    session: dict[str, Any] | None = None
    if "session" in fields:
        try:
            parsed = orjson.loads(fields["session"])
        except orjson.JSONDecodeError:
            raise InvalidParameter("'session' is not JSON", param="session") from None
        if not isinstance(parsed, dict):
            raise InvalidParameter("'session' must be a JSON object", param="session")
        session = parsed
    return _text(fields["sdp"], "sdp"), session


def _text(data: bytes, param: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameter(f"'{param}' is not UTF-8 text", param=param) from None


def handler_for(gateway: Gateway, group: str) -> CallHandler:
    """Forward when every deployment's provider takes the call itself; else terminate here.

    A group mixing both (or an Azure deployment on the preview path, which has no calls
    endpoint) is terminated by rtgate, which then relays to each provider over WebSocket.
    """
    deployments = gateway.config.groups().get(group, ())
    if not deployments:
        raise UnknownModel(f"no model group {group!r} is configured")
    registry = gateway.calls
    forwarded = all(takes_calls(d) for d in deployments)
    handler = registry.forward if forwarded else registry.terminate
    if handler is None:
        raise BadRequest(f"WebRTC calls are not available for model {group!r} on this gateway")
    return handler


async def offer(
    gateway: Gateway,
    scope: Mapping[str, Any],
    headers: Mapping[str, str],
    receive: Receive,
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, body and extra headers of one ``POST /v1/realtime/calls``."""
    body = await read_body(receive, MAX_OFFER_BYTES)
    if body is None:
        too_big = InvalidParameter(f"request body larger than {MAX_OFFER_BYTES} bytes", param="sdp")
        return _error(413, too_big, gateway)
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    try:
        sdp, session = parse_offer(headers.get("content-type", ""), body)
        model = session.get("model") if session else None
        if model is not None and not isinstance(model, str):
            raise InvalidParameter("'session.model' must be a string", param="session.model")
        client = scope.get("client") or ("", 0)
        start = await gateway.session_start(
            presented_key(headers, (), query),
            query.get("model") or model,
            query.get("intent"),
            headers=headers,
            client_addr=f"{client[0]}:{client[1]}",
        )
        answer = await handler_for(gateway, start.group)(start, sdp, session)
    except RtgateError as exc:
        return _error(exc.http_status, exc, gateway)
    log.info(
        "call started: id=%s key=%s model=%s",
        answer.call_id, start.principal.alias, start.group,
    )  # fmt: skip
    location = f"{scope['path'].rstrip('/')}/{answer.call_id}".encode()
    return 201, answer.sdp.encode(), [(b"location", location)]


async def hang_up(
    gateway: Gateway, call_id: str, headers: Mapping[str, str]
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """``DELETE`` or ``.../hangup``: end the call if the caller's key started it."""
    try:
        principal = await gateway.authenticate_key(presented_key(headers, (), {}))
    except ClientError as exc:
        return _error(exc.http_status, exc, gateway)
    call = gateway.calls.calls.get(call_id)
    if call is None or not (principal.is_master or call.key_hash == principal.key_hash):
        return _error(404, ClientError(f"no call {call_id!r}"), gateway)
    gateway.calls.hang_up(call_id)
    log.info("call hung up: id=%s", call_id)
    return 200, b"", []


def cors_headers(gateway: Gateway, headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """CORS for a browser page on another origin (``rtgate.allowed_origins`` applies)."""
    origin = headers.get("origin")
    allowed = gateway.config.server.allowed_origins
    if origin is None or (allowed is not None and origin not in allowed):
        return []
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", b"POST, DELETE, OPTIONS"),
        (b"access-control-allow-headers", b"authorization, content-type"),
        (b"access-control-expose-headers", b"location"),
        (b"access-control-max-age", b"600"),
        (b"vary", b"origin"),
    ]


def _error(
    status: int, exc: RtgateError, gateway: Gateway
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    headers = [(b"content-type", b"application/json")]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    return status, orjson.dumps(error_body(exc, gateway.secrets)), headers
