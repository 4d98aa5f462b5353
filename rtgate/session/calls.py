"""WebRTC calls in progress: each call is a task that outlives the HTTP request that began it.

``POST /v1/realtime/calls`` answers with an SDP answer at once, but the call's session runs
on: the control plane hands it to :class:`CallRegistry`, whose nursery the server owns (so
every call has an owner, and a drain or a shutdown reaches it). ``DELETE`` and hang-up end
a call by id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from rtgate.errors import GatewayShuttingDown
from rtgate.session.start import SessionStart


@attrs.define
class Call:
    """One running call: its id, the model group, who started it, and the scope that ends it."""

    call_id: str
    model_group: str
    key_hash: str | None
    """The issuing key's hash (None: the master key); only it or the master key hangs up."""
    media: str = "terminated"
    """``terminated`` (rtgate's aiortc peer) or ``forwarded`` (the provider's media)."""
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.frozen
class CallAnswer:
    """What ``POST /v1/realtime/calls`` answers: the SDP answer and the call's id."""

    call_id: str
    sdp: str


HANGUP_GRACE = 3.0
"""A hung-up call's session gets this long to end politely (provider told, record written)."""


async def serve_call(
    run_session: Callable[[], Awaitable[None]], end_client: Callable[[int, str], None]
) -> None:
    """Run a call's session until it ends; cancelled (hung up, the gateway stopping), the
    session ends as a client close, so the provider is told and the record written,
    within :data:`HANGUP_GRACE`."""
    finished = trio.Event()
    serving = trio.CancelScope(shield=True)

    async def serve() -> None:
        with serving:
            try:
                await run_session()
            finally:
                finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        try:
            await finished.wait()
        except trio.Cancelled:
            end_client(1000, "call hung up")
            serving.deadline = trio.current_time() + HANGUP_GRACE
            raise


CallHandler = Callable[[SessionStart, str, Mapping[str, Any] | None], Awaitable[CallAnswer]]
"""Starts a call from an authenticated request, the SDP offer and the request's ``session``
object; returns once the answer is ready (the call then runs in the registry)."""


class CallRegistry:
    """Runs calls in its own nursery (:meth:`run`, started by the server) and finds them by id."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self.calls: dict[str, Call] = {}
        self.forward: CallHandler | None = None
        """Calls the provider terminates (OpenAI, Azure): the offer goes to its calls endpoint."""
        self.terminate: CallHandler | None = None
        """Calls rtgate terminates itself (WebRTC media here, any provider behind it)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                for call in self.calls.values():
                    call.scope.cancel()

    def start(self, call: Call, run_call: Callable[[], Awaitable[None]]) -> None:
        """Run ``run_call`` as ``call``'s task until it returns or the call is hung up."""
        if self._nursery is None:
            raise GatewayShuttingDown("the gateway is not taking calls")
        self.calls[call.call_id] = call

        async def owned() -> None:
            try:
                with call.scope:
                    await run_call()
            finally:
                self.calls.pop(call.call_id, None)

        self._nursery.start_soon(owned)

    def hang_up(self, call_id: str) -> bool:
        """End a call now (its session closes as a client close); False when there is none."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        call.scope.cancel()
        return True

    def __len__(self) -> int:
        return len(self.calls)

    def active_by_media(self) -> dict[str, int]:
        """Running calls by who terminates their media (both keys always present)."""
        counts = {"terminated": 0, "forwarded": 0}
        for call in self.calls.values():
            counts[call.media] = counts.get(call.media, 0) + 1
        return counts
