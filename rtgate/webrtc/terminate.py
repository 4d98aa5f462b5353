"""``CallRegistry.terminate``: calls rtgate answers itself, for any provider behind it.

One offer becomes one session, exactly as a WebSocket upgrade does: the request was
authenticated already (``SessionStart``); :meth:`TerminatedCalls.__call__` opens the
session (admission, pool walk, dial), builds the peer connection on the calls' asyncio
thread, answers the offer once host candidates (and any STUN/TURN ones) are gathered,
and starts the call's task in the registry. Anything failing before the answer gives the
session's slots back. The call's task relays until the peer leaves, goes idle
(``rtgate.webrtc.idle_timeout``), is hung up or the gateway stops, then closes the peer
connection; the session's slots go back on every path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import trio

from rtgate.errors import InvalidParameter, RtgateError, TooManySessions
from rtgate.session.calls import Call, CallAnswer, serve_call
from rtgate.session.start import SessionStart
from rtgate.translate.base import new_id
from rtgate.webrtc.audio import BYTES_PER_MS
from rtgate.webrtc.connection import CallConnection
from rtgate.webrtc.loop import AsyncioThread

if TYPE_CHECKING:
    from rtgate.session.gateway import Gateway, _Session
    from rtgate.webrtc.peer import CallPeer

log = logging.getLogger("rtgate.webrtc")

CLOSE_TIMEOUT = 5.0


class TerminatedCalls:
    """The terminate handler the server installs; owns the asyncio thread of every call."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.thread = AsyncioThread(udp_ports=gateway.config.webrtc.udp_ports)
        self.active = 0
        """Calls answered or being answered, not yet torn down."""

    async def __call__(
        self, start: SessionStart, sdp: str, session: Mapping[str, Any] | None
    ) -> CallAnswer:
        gateway = self.gateway
        settings = gateway.config.webrtc
        if settings.max_calls and self.active >= settings.max_calls:
            raise TooManySessions("this gateway holds as many WebRTC calls as it may")
        self.active += 1
        try:
            return await self._answer(start, sdp, session)
        except BaseException:
            self.active -= 1
            raise

    async def _answer(
        self, start: SessionStart, sdp: str, session: Mapping[str, Any] | None
    ) -> CallAnswer:
        from rtgate.webrtc.peer import CallPeer, call_session  # aiortc loads with the first call

        gateway = self.gateway
        settings = gateway.config.webrtc
        opened = await gateway.open_session(start)
        token = trio.lowlevel.current_trio_token()
        thread = self.thread
        conn: CallConnection | None = None

        def to_trio(frames: list[bytes]) -> None:
            if conn is not None:
                _run_in_trio(token, conn.deliver, frames)

        def ended(code: int, reason: str) -> None:
            if conn is not None:
                _run_in_trio(token, conn.end, code, reason)

        peer = CallPeer(settings, to_trio, ended)
        conn = CallConnection(
            peer,
            thread.soon,
            idle_timeout=settings.idle_timeout,
            max_buffered_audio=int(settings.output_buffer_seconds * 1000 * BYTES_PER_MS),
        )
        if session:
            # OpenAI's multipart ``session`` configures the call: the first client event.
            configured = call_session({"type": "realtime", **session})
            conn.deliver([orjson.dumps({"type": "session.update", "session": configured})])
        call = Call(new_id("rtc"), start.group, start.principal.key_hash)
        try:
            with trio.fail_after(settings.answer_timeout):
                answer = await thread.run(peer.answer(sdp))
            gateway.calls.start(call, partial(self._run, call, opened, conn, peer))
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._abandon(opened, peer, exc)
            if isinstance(exc, trio.TooSlowError):
                raise InvalidParameter(
                    "the call's answer was not ready in time (ICE gathering)", param="sdp"
                ) from None
            if isinstance(exc, (ValueError, AssertionError, KeyError)):
                # aiortc refuses an offer it cannot parse or has nothing to answer with.
                raise InvalidParameter(f"unusable SDP offer: {exc}", param="sdp") from None
            raise
        return CallAnswer(call.call_id, answer)

    async def _abandon(self, opened: _Session, peer: CallPeer, exc: BaseException) -> None:
        """No answer: the session is abandoned, then the peer connection closed."""
        code = 1008 if isinstance(exc, RtgateError) else 1011
        await opened.abandon(self.gateway, code, "call setup failed")
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self.thread.run(peer.close())

    async def _run(
        self, call: Call, opened: _Session, conn: CallConnection, peer: CallPeer
    ) -> None:
        """The call's task: relay until it ends; a hang-up ends it politely, then the peer."""
        try:
            await serve_call(partial(opened.run, self.gateway, conn), conn.end)
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self.thread.run(peer.close())
                self.active -= 1
                if conn.audio_dropped:
                    log.info("call %s: %d input appends dropped (session behind)",
                             call.call_id, conn.audio_dropped)  # fmt: skip

    async def aclose(self) -> None:
        """Stop the asyncio thread (the server calls this once its calls have ended)."""
        await self.thread.aclose()


def _run_in_trio(token: trio.lowlevel.TrioToken, fn: Any, *args: Any) -> None:
    try:
        token.run_sync_soon(fn, *args)
    except trio.RunFinishedError:
        pass
