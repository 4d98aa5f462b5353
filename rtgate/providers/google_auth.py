"""Google service-account OAuth2 for Vertex AI: the JWT-bearer grant, cached tokens.

Owns: reading a service-account JSON (a path or the JSON itself, LiteLLM's
``vertex_credentials``), signing the RS256 assertion with ``cryptography``,
exchanging it at the account's ``token_uri`` (RFC 7523; the same request
google-auth makes; Google's guide:
https://developers.google.com/identity/protocols/oauth2/service-account#httprest)
and caching the access token until
shortly before it expires. The HTTP exchange runs in a worker thread bounded
by a timeout, so the event loop never waits on it; tests point ``token_uri``
at a fake on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Final

import attrs
import orjson
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rtgate.errors import UpstreamConnectError

SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"
ASSERTION_LIFETIME: Final = 3600
REFRESH_MARGIN: Final = 300.0
"""Seconds before expiry at which a cached token is replaced."""
_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@attrs.frozen(repr=False)
class ServiceAccount:
    """The parts of a service-account key file the grant needs."""

    client_email: str
    private_key: str
    private_key_id: str | None
    token_uri: str
    project_id: str | None = None
    quota_project_id: str | None = None

    def __repr__(self) -> str:
        return f"ServiceAccount({self.client_email!r})"

    @classmethod
    def from_json(cls, text: str) -> ServiceAccount:
        """Parse key-file JSON; ValueError names what is missing (never the key)."""
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("vertex_credentials is not valid JSON") from None
        if not isinstance(info, dict):
            raise ValueError("vertex_credentials must be a JSON object")
        if info.get("type", "service_account") != "service_account":
            raise ValueError(f"vertex_credentials of type {info.get('type')!r} is not supported")
        missing = [k for k in ("client_email", "private_key") if not isinstance(info.get(k), str)]
        if missing:
            raise ValueError("vertex_credentials lacks " + ", ".join(missing))
        return cls(
            client_email=info["client_email"],
            private_key=info["private_key"],
            private_key_id=info.get("private_key_id") or None,
            token_uri=info.get("token_uri") or GOOGLE_TOKEN_URI,
            project_id=info.get("project_id") or None,
            quota_project_id=info.get("quota_project_id") or None,
        )

    @classmethod
    def load(cls, value: str) -> ServiceAccount:
        """``value`` is inline JSON or the path of a key file."""
        if value.lstrip().startswith("{"):
            return cls.from_json(value)
        try:
            with open(value, encoding="utf-8") as handle:
                return cls.from_json(handle.read())
        except OSError as exc:
            raise ValueError(
                f"cannot read vertex_credentials file {value!r}: {exc.strerror}"
            ) from None


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed_assertion(account: ServiceAccount, issued_at: int, scope: str = SCOPE) -> str:
    """The RS256-signed JWT the token endpoint exchanges for an access token."""
    header: dict[str, str] = {"typ": "JWT", "alg": "RS256"}
    if account.private_key_id:
        header["kid"] = account.private_key_id
    claims = {
        "iss": account.client_email,
        "aud": account.token_uri,
        "scope": scope,
        "iat": issued_at,
        "exp": issued_at + ASSERTION_LIFETIME,
    }
    key = serialization.load_pem_private_key(account.private_key.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the service account's private_key is not an RSA key")
    signing_input = _b64url(orjson.dumps(header)) + b"." + _b64url(orjson.dumps(claims))
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return (signing_input + b"." + _b64url(signature)).decode("ascii")


def parse_token_response(body: bytes) -> tuple[str, float]:
    """(access_token, expires_in seconds) from the endpoint's JSON; ValueError if malformed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("token endpoint answered with something other than JSON") from None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise ValueError("token endpoint answered without an access_token")
    expires = data.get("expires_in", ASSERTION_LIFETIME)
    try:
        seconds = float(expires)  # google-auth notes it may arrive as a string
    except (TypeError, ValueError):
        seconds = float(ASSERTION_LIFETIME)
    return token, seconds


def _exchange(token_uri: str, assertion: str, timeout: float) -> bytes:
    """Blocking POST of the grant (runs in a worker thread)."""
    body = urllib.parse.urlencode({"grant_type": _GRANT, "assertion": assertion}).encode()
    request = urllib.request.Request(
        token_uri,
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    context = ssl.create_default_context() if token_uri.startswith("https:") else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        data: bytes = response.read(1 << 20)
        return data


class TokenSource:
    """One service account's access token, fetched on demand and reused until near expiry."""

    def __init__(self, account: ServiceAccount) -> None:
        self.account = account
        self._token: str | None = None
        self._expires_at = 0.0
        self._run: object = None  # trio clocks differ per run; a token is valid in its own run
        self._lock: trio.Lock | None = None
        self.fetches = 0

    def _cached(self, now: float) -> str | None:
        if self._token is None or self._run is not trio.lowlevel.current_trio_token():
            return None
        return self._token if now < self._expires_at - REFRESH_MARGIN else None

    async def token(self, *, timeout: float) -> str:
        """A valid access token; raises UpstreamConnectError(kind=auth|timeout|refused)."""
        cached = self._cached(trio.current_time())
        if cached is not None:
            return cached
        if self._lock is None or self._run is not trio.lowlevel.current_trio_token():
            self._lock = trio.Lock()
            self._run = trio.lowlevel.current_trio_token()
            self._token = None
        async with self._lock:
            cached = self._cached(trio.current_time())
            if cached is not None:
                return cached
            token, lifetime = await self._fetch(timeout)
            self._token = token
            self._expires_at = trio.current_time() + lifetime
            return token

    async def _fetch(self, timeout: float) -> tuple[str, float]:
        self.fetches += 1
        try:
            # iat/exp are wall-clock claims Google checks, not the event loop's clock.
            assertion = signed_assertion(self.account, int(time.time()))
        except ValueError as exc:
            raise UpstreamConnectError(f"vertex credentials unusable: {exc}", kind="auth") from None
        uri = self.account.token_uri
        try:
            with trio.fail_after(timeout):
                body = await trio.to_thread.run_sync(
                    _exchange, uri, assertion, timeout, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            raise UpstreamConnectError(
                "fetching a Vertex access token timed out", kind="timeout"
            ) from None
        except urllib.error.HTTPError as exc:
            kind = "auth" if exc.code in (400, 401, 403) else "rejected"
            raise UpstreamConnectError(
                f"token endpoint refused the service account (HTTP {exc.code})", kind=kind
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            kind = "timeout" if isinstance(reason, TimeoutError) else "refused"
            raise UpstreamConnectError(
                f"cannot reach the token endpoint: {reason}", kind=kind
            ) from None
        try:
            return parse_token_response(body)
        except ValueError as exc:
            raise UpstreamConnectError(str(exc), kind="auth") from None


_sources: dict[tuple[str, str | None, str, str], TokenSource] = {}


def token_source(account: ServiceAccount) -> TokenSource:
    """The shared token source of an account (one token per account per process)."""
    key = (
        account.client_email,
        account.private_key_id,
        account.token_uri,
        account.private_key[-64:],
    )
    source = _sources.get(key)
    if source is None:
        source = _sources[key] = TokenSource(account)
    return source
