"""``CallRegistry.forward``: WebRTC calls the provider terminates (OpenAI, Azure).

The client's media and data channel run between the client and the provider; rtgate
only carries the offer and the answer, and follows the call on its sideband socket. One
offer is one session, exactly as a WebSocket upgrade is: :class:`ForwardedCalls` opens it
with the offer in the session's context (admission, the pool walk with failover; the
provider's ``connect`` posts the offer with the deployment's key and opens the sideband,
:mod:`rtgate.providers.provider_calls`), answers with the provider's SDP, and runs the
session in the call registry with :class:`SidebandOnly` as its client.

So the relay drives the sideband alone: the provider's server events reach the event log,
usage, spend and the session's limits; a client secret's bound configuration is sent there
as the first ``session.update``. Nothing the client sends on its data channel passes
rtgate. The call ends when the provider closes the sideband (the peer left, the call timed
out), on ``DELETE``/hang-up, by the session's own limits, or in the gateway's drain; rtgate
then hangs the call up at the provider unless the provider ended it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import trio

from rtgate.config.model import Deployment
from rtgate.net.wsconn import ConnectionClosed
from rtgate.providers import get_provider
from rtgate.providers.base import CallOffer, SessionContext
from rtgate.providers.provider_calls import ProviderCallLink
from rtgate.providers.websocket import WebSocketProvider
from rtgate.session.calls import Call, CallAnswer, serve_call
from rtgate.session.start import SessionStart
from rtgate.translate.base import new_id
from rtgate.wire import Frame

if TYPE_CHECKING:
    from rtgate.session.gateway import Gateway, _Session

log = logging.getLogger("rtgate.calls")


def takes_calls(deployment: Deployment) -> bool:
    """The deployment's provider takes WebRTC calls itself (OpenAI; Azure on the GA path)."""
    provider = get_provider(deployment.provider)
    if not isinstance(provider, WebSocketProvider):
        return False
    ctx = SessionContext(session_id="", model_group=deployment.model_name)
    return provider.call_endpoint(deployment, ctx) is not None


class SidebandOnly:
    """The relay's client for a forwarded call: nothing arrives, server events are dropped.

    The events were seen on the way (event log, usage, spend) before :meth:`send`. The
    call's liveness is the provider's (ICE consent on the media): ``last_received`` is
    always now, so the relay's ping and idle limits never end a call whose user is quiet;
    the provider closing the sideband ends it.
    """

    def __init__(self) -> None:
        self.unfinished_since: float | None = None
        self.bytes_received = 0
        self._ended = trio.Event()
        self._closed: ConnectionClosed | None = None

    @property
    def last_received(self) -> float:
        return trio.current_time()

    @last_received.setter
    def last_received(self, value: float) -> None:
        """Nothing to keep (the getter is always now)."""

    def end(self, code: int, reason: str) -> None:
        """The call is over on rtgate's side (hung up, gateway stopping)."""
        if self._closed is None:
            self._closed = ConnectionClosed(code, reason, by_peer=True)
        self._ended.set()

    async def receive(self) -> list[Frame]:
        await self._ended.wait()
        assert self._closed is not None
        raise self._closed

    async def send(self, messages: Sequence[Frame]) -> None:
        """Seen already (event log, accounting); a forwarded call's client reads them from
        the provider."""

    async def ping(self, payload: bytes = b"") -> None:
        """The provider checks the peer (ICE consent); nothing to send."""

    async def close(self, code: int = 1000, reason: str = "", *, grace: float = 1.0) -> None:
        self.end(code, reason)

    def watch_unfinished(
        self, started: Callable[[float], None], evicted: Callable[[], None]
    ) -> None:
        """Nothing is ever read from the client, so nothing is unfinished."""

    def drop_unfinished(self) -> None:
        """Nothing is ever unfinished here."""


class ForwardedCalls:
    """The forward handler the server installs."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(
        self, start: SessionStart, sdp: str, session: Mapping[str, Any] | None
    ) -> CallAnswer:
        gateway = self.gateway
        start = attrs.evolve(start, call_offer=CallOffer(sdp, session))
        opened = await gateway.open_session(start)
        link = opened.link
        assert isinstance(link, ProviderCallLink)
        call = Call(new_id("rtc"), start.group, start.principal.key_hash, media="forwarded")
        client = SidebandOnly()
        try:
            gateway.calls.start(call, partial(self._run, call, opened, client))
        except BaseException:
            await opened.abandon(gateway, 1001, "call setup failed")  # hangs the call up too
            raise
        log.info(
            "call forwarded: id=%s deployment=%s provider_call=%s",
            call.call_id, opened.deployment.id, link.call_id,
        )  # fmt: skip
        return CallAnswer(call.call_id, link.answer_sdp)

    async def _run(self, call: Call, opened: _Session, client: SidebandOnly) -> None:
        """The call's task: relay the sideband until it ends; a hang-up ends it politely
        (the link's close then hangs the call up at the provider)."""
        await serve_call(partial(opened.run, self.gateway, client), client.end)
