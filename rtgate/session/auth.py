"""Client authentication at the handshake: which key, which alias, what it may use.

Pure. Keys arrive as ``Authorization: Bearer KEY``, ``api-key: KEY``, the
browser subprotocol ``openai-insecure-api-key.KEY``, or Azure browser clients'
``api-key`` query parameter. Keys are compared as sha256 digests with
:func:`hmac.compare_digest`, so neither the key nor its position leaks by timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence

import attrs

from rtgate.config.model import GatewayConfig
from rtgate.errors import BadRequest, Forbidden, Unauthenticated

BROWSER_KEY_PREFIX = "openai-insecure-api-key."


@attrs.frozen
class Principal:
    """The authenticated client (never the key itself) and the limits its sessions obey.

    Plain values so any key source (``rtgate.keys``, a key database) can fill them;
    :mod:`rtgate.session.admission` enforces the limits.
    """

    alias: str | None
    """Names the key in limits, logs and metrics (None: no auth configured)."""
    models: frozenset[str] | None = None
    """Model groups the key may use (None: all)."""
    max_sessions: int | None = None
    """Concurrent sessions the key may hold (the counterpart of LiteLLM's key ``max_parallel_requests``)."""
    is_master: bool = False
    key_hash: str | None = attrs.field(default=None, repr=False)
    """sha256 hex of the key (spend is recorded under it; None: unauthenticated)."""
    rpm_limit: int | None = None
    """New sessions per minute of this key (LiteLLM's ``rpm_limit``)."""

    def check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise Forbidden(f"this key may not use model {model!r}")


ANONYMOUS = Principal(alias=None)


def presented_key(
    headers: Mapping[str, str], subprotocols: Sequence[str], query: Mapping[str, str]
) -> str | None:
    """The key a client presented, wherever it put it (headers lower-cased)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("api-key")
    if api_key:
        return api_key.strip()
    for proto in subprotocols:
        if proto.startswith(BROWSER_KEY_PREFIX):
            return proto[len(BROWSER_KEY_PREFIX) :]
    return query.get("api-key") or None


CREDENTIAL_HEADERS = frozenset({"authorization", "api-key"})


def credentials_presented(
    raw_headers: Iterable[tuple[str, str]],
    subprotocols: Sequence[str],
    query_pairs: Iterable[tuple[str, str]],
) -> int:
    """How many credentials a request carries, every header and parameter counted.

    More than one is refused (400): with two, rtgate and a proxy in front of it
    could each check a different one and disagree about who the caller is.
    """
    count = sum(1 for name, _ in raw_headers if name.lower() in CREDENTIAL_HEADERS)
    count += sum(1 for proto in subprotocols if proto.startswith(BROWSER_KEY_PREFIX))
    return count + sum(1 for name, _ in query_pairs if name == "api-key")


def check_one_credential(
    raw_headers: Iterable[tuple[str, str]],
    subprotocols: Sequence[str] = (),
    query_pairs: Iterable[tuple[str, str]] = (),
) -> None:
    """Raise :class:`BadRequest` for a request presenting more than one credential."""
    if credentials_presented(raw_headers, subprotocols, query_pairs) > 1:
        raise BadRequest(
            "more than one credential (Authorization, api-key, key subprotocol or ?api-key=): "
            "send exactly one"
        )


class Authenticator:
    """Checks presented keys against the master key and the virtual keys."""

    def __init__(self, config: GatewayConfig) -> None:
        self._required = config.has_auth()
        self._master = (
            hashlib.sha256(config.master_key.value.encode()).digest() if config.master_key else None
        )
        self._keys = [
            (
                bytes.fromhex(k.sha256),
                Principal(
                    k.alias, k.models, k.max_sessions, key_hash=k.sha256, rpm_limit=k.rpm_limit
                ),
            )
            for k in config.server.keys
        ]

    @property
    def required(self) -> bool:
        return self._required

    def authenticate(self, key: str | None) -> Principal:
        """The principal for ``key``; :class:`Unauthenticated` if it is missing or unknown."""
        if not self._required:
            return ANONYMOUS
        if not key:
            raise Unauthenticated("missing API key (Authorization: Bearer KEY or api-key header)")
        return self.by_digest(hashlib.sha256(key.encode()).digest())

    def by_digest(self, digest: bytes) -> Principal:
        """The principal whose key hashes to ``digest`` (a client secret's issuer), as configured now."""
        if not self._required:
            return ANONYMOUS
        found: Principal | None = None
        # Compare against every key so timing does not depend on which one matched.
        if self._master is not None and hmac.compare_digest(digest, self._master):
            found = Principal(alias="master", is_master=True, key_hash=digest.hex())
        for candidate, principal in self._keys:
            if hmac.compare_digest(digest, candidate) and found is None:
                found = principal
        if found is None:
            raise Unauthenticated("invalid API key")
        return found

    def is_master(self, key: str | None) -> bool:
        if self._master is None or not key:
            return False
        return hmac.compare_digest(hashlib.sha256(key.encode()).digest(), self._master)
