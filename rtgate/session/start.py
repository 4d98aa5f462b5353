"""An authenticated request for a session, however it arrived (WebSocket upgrade, WebRTC call)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from rtgate.providers.base import CallOffer
from rtgate.session.auth import Principal
from rtgate.wire import Frame


@attrs.frozen
class SessionStart:
    """An authenticated request for a session: who, which model group, and how it arrived."""

    principal: Principal
    group: str
    intent: str | None
    headers: Mapping[str, str]
    """The client's request headers, lower-cased (``traceparent``, forwarded headers)."""
    client_addr: str
    beta: bool = False
    initial_config: Frame | None = None
    """A client secret's bound configuration (its first ``session.update``)."""
    call_offer: CallOffer | None = None
    """A WebRTC call's offer, for a provider that terminates the call itself."""
