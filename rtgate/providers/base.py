"""The provider seam: how a deployment is dialed and which translator speaks to it.

A :class:`Provider` is registered per ``litellm_params.model`` prefix
(``openai/``, ``azure/``, ``xai/``, ``mock/``, ``gemini/``, ``vertex_ai/``,
``bedrock/``). It owns two things only:

* ``connect``: open an :class:`UpstreamLink` to one deployment (WebSocket,
  HTTP/2 event stream, or in-process) or raise
  :class:`rtgate.errors.UpstreamConnectError` with a ``kind`` the pool learns
  from. Bounded by the caller's timeout.
* ``translator``: a fresh pure :class:`rtgate.translate.base.Translator` for a
  session.

``validate`` lets ``rtgate check`` and the loader reject a deployment that
lacks what the provider needs (for example ``vertex_project``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from rtgate.config.model import Deployment
from rtgate.translate.base import Translator
from rtgate.wire import Frame


@attrs.frozen
class CallOffer:
    """A WebRTC call for a provider that terminates calls itself (OpenAI, Azure)."""

    sdp: str
    session: Mapping[str, Any] | None = None
    """The client's ``session`` object (OpenAI's multipart field), or None."""


@attrs.frozen
class SessionContext:
    """What a provider may know about the client side of one session."""

    session_id: str
    model_group: str
    intent: str | None = None
    """``transcription`` for ``?intent=transcription`` sessions."""
    forwarded_query: Mapping[str, str] = attrs.field(factory=dict)
    """Allow-listed client query parameters (never hosts or keys)."""
    forwarded_headers: Mapping[str, str] = attrs.field(factory=dict)
    """Allow-listed client headers (for example ``OpenAI-Safety-Identifier``)."""
    connect_timeout: float = 10.0
    max_message_bytes: int = 16 * 1024 * 1024
    call_offer: CallOffer | None = None
    """A WebRTC call: the provider terminates it (OpenAI, Azure), ``connect`` posts the offer
    and the link is the call's sideband socket. None for a WebSocket session."""


class UpstreamLink(Protocol):
    """An open session with a provider, as the relay sees it.

    ``receive`` waits for at least one message and returns every message that
    one read delivered (batching is the point). It raises
    :class:`rtgate.errors.UpstreamClosed` when the provider ends the session.
    ``send`` writes every frame with as few socket writes as possible.
    """

    first_frames: Sequence[Frame]
    """Messages read while dialing (for example ``session.created``), not yet relayed."""

    async def receive(self) -> list[Frame]: ...

    async def send(self, frames: Sequence[Frame]) -> None: ...

    async def ping(self) -> None:
        """Send a keepalive if the transport has one (no-op otherwise)."""

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close politely, bounded in time; never raises."""

    async def abandon(self, code: int = 1000, reason: str = "") -> None:
        """Close while another task may still be reading this link (a reconnect swapped it
        out): never reads, bounded in time; never raises."""

    def pending_bytes(self) -> int:
        """Bytes written but not yet accepted by the peer's socket (0 if unknown)."""


class Provider(Protocol):
    """One upstream family (see module docstring)."""

    name: str
    warmable: bool
    """Connections can be opened before a client asks (``litellm_params.warm_pool``)."""

    def validate(self, deployment: Deployment) -> list[str]:
        """Problems with this deployment's parameters, as human sentences (empty: fine)."""

    async def connect(self, deployment: Deployment, ctx: SessionContext) -> UpstreamLink: ...

    def translator(self, deployment: Deployment, ctx: SessionContext) -> Translator: ...
