"""What the relay needs of its client side, whatever carries it.

A WebSocket session's client is a :class:`rtgate.net.wsconn.WsConnection`. A WebRTC call's
client is an adapter: the ``oai-events`` data channel and the audio track of a call rtgate
terminates, or nothing at all for a call the provider terminates (the relay then drives the
provider's sideband socket alone). Each implements this protocol, so the relay, the event
log, accounting and limits treat every call as a session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from rtgate.wire import Frame


class ClientConnection(Protocol):
    """The client side of one relayed session (raises ``ConnectionClosed`` when it ends)."""

    last_received: float
    """``trio.current_time()`` of the last read (the relay's clock for a batch)."""
    unfinished_since: float | None
    """When a message began that is not complete yet (None: none is)."""
    bytes_received: int

    async def receive(self) -> list[Frame]:
        """The next batch of complete client events; raises ``ConnectionClosed`` at the end."""
        ...

    async def send(self, messages: Sequence[Frame]) -> None:
        """Deliver a batch of server events to the client."""
        ...

    async def ping(self, payload: bytes = b"") -> None:
        """Probe the client's liveness (a no-op where the carrier has its own)."""
        ...

    async def close(self, code: int = 1000, reason: str = "", *, grace: float = 1.0) -> None:
        """End the client side; never raises."""
        ...

    def watch_unfinished(
        self, started: Callable[[float], None], evicted: Callable[[], None]
    ) -> None:
        """Be told when an unfinished message begins, or the buffer budget evicts it."""
        ...

    def drop_unfinished(self) -> None:
        """Free an unfinished message and ignore further input."""
        ...
