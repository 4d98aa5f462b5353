"""The one exception tree of rtgate, and how each error reaches a client.

Every error knows the HTTP status it becomes while the client's handshake is
still open. An error that can end a running session also knows its WebSocket
close code; :meth:`rtgate.session.relay.Relay._end_by_gateway` is the one place
that turns such an error into an OpenAI ``error`` event (``error_type``,
``error_code``, message) and that close code. Errors raised only at the
handshake (client errors, no deployment) have no close code of their own::

    RtgateError
    ├── ConfigError(path, line)             bad configuration file (never seen by clients)
    ├── ClientError                          the client did something wrong
    │   ├── Unauthenticated                  401  missing or unknown key
    │   ├── Forbidden                        403  key may not use that model / origin refused
    │   ├── UnknownModel                     404  no such model group
    │   ├── BadRequest                       400  malformed handshake (no model, bad path)
    │   ├── TooManySessions                  429  a key or the gateway is at its session cap
    │   └── BudgetExceeded                   400  a key reached its max_budget (1008 in a session)
    ├── UpstreamError                        502 / 1011  a provider misbehaved
    │   ├── UpstreamConnectError(kind)       DNS/TCP/TLS/timeout while dialing
    │   │   └── UpstreamRejected(status)     HTTP status other than 101 at the upgrade
    │   └── UpstreamClosed(code, reason)     the provider ended the stream
    ├── NoDeploymentAvailable                503  every deployment failed or is cooling down
    │   └── AllDeploymentsBusy(retry_after)  429  every deployment is at capacity
    ├── GatewayShuttingDown                  503 / 1001  draining (refused / ended)
    ├── DatabaseUnavailable                  503  spend database down, budgeted key refused
    └── SessionLimit                         1000  a running session reached one of its limits
        ├── SessionExpired                   limits.max_session_seconds
        └── SessionIdle                      limits.idle_timeout

Messages must never carry a secret: :func:`scrub` removes anything that looks
like a key before a message leaves the process.
"""

from __future__ import annotations

import re
from typing import ClassVar

_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6,}|xai-[A-Za-z0-9_\-]{6,}|AIza[0-9A-Za-z_\-]{10,}"
    r"|AKIA[0-9A-Z]{12,}|ASIA[0-9A-Z]{12,}|ek_[A-Za-z0-9_\-]{6,}|ya29\.[A-Za-z0-9_\-.]+"
    r"|(?i:bearer)\s+[A-Za-z0-9_\-.=]{8,}|(?i:api[-_]?key)[=:]\s*[^\s&,;]+|key=[^\s&,;]+)"
)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Return ``text`` with known secrets and key-shaped tokens replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _SECRET_PATTERNS.sub("***", text)


def close_reason(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A WebSocket close reason: scrubbed, and cut to 123 UTF-8 bytes (RFC 6455 5.5)."""
    encoded = scrub(text, secrets).encode()[:123]
    return encoded.decode("utf-8", errors="ignore")


class RtgateError(Exception):
    """Base of every error rtgate raises on purpose."""

    http_status: ClassVar[int] = 500
    close_code: ClassVar[int] = 1011
    """Close code when this error ends a running session (1011: rtgate failed)."""
    error_type: ClassVar[str] = "server_error"
    error_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.__class__.__doc__ or self.__class__.__name__

    def __str__(self) -> str:
        return self.message


class ConfigError(RtgateError):
    """The configuration file is invalid; ``path`` and ``line`` locate the culprit."""

    error_code = "config_error"

    def __init__(self, message: str, *, path: str = "", line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line

    def __str__(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


class ClientError(RtgateError):
    """The client sent something rtgate refuses."""

    http_status = 400
    error_type = "invalid_request_error"
    error_code = "bad_request"


class BadRequest(ClientError):
    """The handshake is malformed: wrong path, missing model, not a WebSocket upgrade."""


class Unauthenticated(ClientError):
    """No API key, or one rtgate does not know."""

    http_status = 401
    error_code = "invalid_api_key"


class Forbidden(ClientError):
    """The key is valid but may not do this (model not allowed, origin refused)."""

    http_status = 403
    error_code = "forbidden"


class UnknownModel(ClientError):
    """No model group of that name is configured."""

    http_status = 404
    error_code = "model_not_found"


class TooManySessions(ClientError):
    """A per-key or gateway-wide concurrent session cap is reached."""

    http_status = 429
    error_code = "rate_limit_exceeded"

    def __init__(self, message: str = "", retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(RtgateError):
    """A provider failed or broke the protocol."""

    http_status = 502
    close_code = 1011
    error_code = "upstream_error"


class UpstreamConnectError(UpstreamError):
    """Dialing a deployment failed before a session could start.

    ``kind`` classifies the failure for the pool: ``refused``, ``dns``, ``tls``,
    ``timeout``, ``rejected`` (HTTP status at upgrade), ``closed`` (closed before
    the first event), ``auth`` (401/403 or an auth close), ``throttled`` (429).
    """

    def __init__(self, message: str, *, kind: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class UpstreamRejected(UpstreamConnectError):
    """The provider answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, body: str = "", *, retry_after: float | None = None) -> None:
        if status in (401, 403):
            kind = "auth"
        elif status == 429:
            kind = "throttled"
        else:
            kind = "rejected"
        super().__init__(f"upstream answered HTTP {status}", kind=kind, retry_after=retry_after)
        self.status = status
        self.body = body


class UpstreamClosed(UpstreamError):
    """The provider ended the session (close frame, EOF, reset or in-stream exception).

    ``error_type`` names a provider exception where one was given (for example
    ``ThrottlingException`` on Bedrock) so the pool and the client learn why.
    """

    def __init__(self, code: int, reason: str = "", *, error_type: str | None = None) -> None:
        super().__init__(f"upstream closed ({code}) {reason}".strip())
        self.code = code
        self.reason = reason
        self.upstream_error_type = error_type


class NoDeploymentAvailable(RtgateError):
    """Every deployment of the model failed to connect or is cooling down."""

    http_status = 503
    error_code = "no_deployment_available"

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AllDeploymentsBusy(NoDeploymentAvailable):
    """Every deployment of the model is at its capacity."""

    http_status = 429
    error_code = "rate_limit_exceeded"


class GatewayShuttingDown(RtgateError):
    """rtgate is draining and takes no new sessions."""

    http_status = 503
    close_code = 1001
    error_code = "gateway_restarting"


class SessionLimit(RtgateError):
    """A running session reached one of rtgate's limits; it ends normally, after an ``error``."""

    close_code = 1000
    error_type = "invalid_request_error"
    error_code = "session_limit"


class SessionExpired(SessionLimit):
    """The session reached ``limits.max_session_seconds``."""

    error_code = "session_expired"


class SessionIdle(SessionLimit):
    """No frame either way for ``limits.idle_timeout`` seconds."""

    error_code = "idle_timeout"


class MessageTimeout(SessionLimit):
    """A client message was not completed within ``limits.message_timeout`` of its first bytes."""

    close_code = 1008
    error_code = "message_timeout"


class BufferBudgetExceeded(SessionLimit):
    """The gateway holds ``limits.max_buffered_bytes`` in unfinished messages; this session's
    was the largest and was dropped (1013: try again later)."""

    close_code = 1013
    error_type = "server_error"
    error_code = "max_buffered_bytes"


class BudgetExceeded(ClientError):
    """A key reached its ``max_budget``. LiteLLM's shape: HTTP 400, type ``budget_exceeded``,
    code ``"400"``; a running session gets an ``error`` event and close code 1008."""

    error_type = "budget_exceeded"
    error_code = "400"


class DatabaseUnavailable(RtgateError):
    """The spend database is unreachable and the policy refuses this key meanwhile."""

    http_status = 503
    close_code = 1013
    error_code = "database_unavailable"
