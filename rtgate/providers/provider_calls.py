"""WebRTC calls the provider terminates (OpenAI, Azure): the offer, the sideband, the hang-up.

OpenAI's WebRTC flow (https://platform.openai.com/docs/guides/realtime-webrtc): the SDP
offer is posted to ``POST /v1/realtime/calls`` as multipart form data (``sdp`` and a
``session`` object naming the model); the answer is the ``201``'s body and its
``Location`` header names the call (``/v1/realtime/calls/{call_id}``). A server then
follows the call's events on the sideband WebSocket ``/v1/realtime?call_id={call_id}``
(https://platform.openai.com/docs/guides/realtime-server-controls) and ends it with
``POST /v1/realtime/calls/{call_id}/hangup``. Azure serves the same API under
``/openai/v1/realtime`` (https://learn.microsoft.com/azure/ai-foundry/openai/how-to/realtime-audio-webrtc).

:func:`open_provider_call` is a provider's ``connect`` for a session whose context carries
a :class:`CallOffer`: it posts the offer with the deployment's real key (so a failure is a
failed dial and the pool fails over), then opens the sideband. The
:class:`ProviderCallLink` it returns is the session's upstream: the relay reads the call's
server events from it, so the event log, usage, spend, limits and drain apply to the call;
closing it hangs the call up unless the provider ended it first.
"""

from __future__ import annotations

import email.policy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any

import attrs
import orjson
import trio

from rtgate.config.model import Deployment
from rtgate.errors import UpstreamClosed, UpstreamConnectError, UpstreamRejected
from rtgate.net.http_request import request
from rtgate.net.upstream_ws import WsUpstream, retry_after_seconds
from rtgate.providers.base import CallOffer, SessionContext
from rtgate.wire import Frame

log = logging.getLogger("rtgate.calls")

HANGUP_TIMEOUT = 5.0
"""How long telling the provider to hang up may take (the session's end waits for it)."""


@attrs.frozen
class CallEndpoint:
    """Where a deployment takes calls: the calls URL and the headers that authorize it."""

    calls_url: str
    """``https://HOST/v1/realtime/calls`` (Azure: ``.../openai/v1/realtime/calls``)."""
    headers: Mapping[str, str] = attrs.field(repr=False)


def form_data(fields: Sequence[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    """``(content_type, body)`` of a multipart/form-data body of ``(name, type, data)`` fields.

    The stdlib MIME writer does the encoding (RFC 7578 form data is MIME multipart).
    """
    form = EmailMessage(policy=email.policy.HTTP)
    form.set_type("multipart/form-data")
    for name, content_type, data in fields:
        part = EmailMessage(policy=email.policy.HTTP)
        part.set_payload(data)
        part["Content-Type"] = content_type
        part["Content-Disposition"] = f'form-data; name="{name}"'
        form.attach(part)
    encoded = form.as_bytes()
    body = encoded.split(b"\r\n\r\n", 1)[1]
    return str(form["Content-Type"]), body


def call_session(offer: CallOffer, deployment: Deployment) -> dict[str, Any]:
    """The ``session`` object posted with the offer: the client's, on the deployment's model.

    The client named rtgate's model group; the provider needs its own model id (Azure:
    the deployment name), which is the deployment's ``model``.
    """
    session: dict[str, Any] = dict(offer.session or {})
    session.setdefault("type", "realtime")
    if session["type"] == "realtime":
        session["model"] = deployment.model
    else:
        session.pop("model", None)
    return session


def provider_call_id(location: str | None) -> str | None:
    """The call id at the end of the answer's ``Location`` (a path or an absolute URL)."""
    if not location:
        return None
    tail = location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail or None


class ProviderCallLink:
    """The sideband of a call the provider terminates; implements ``UpstreamLink``.

    ``answer_sdp`` is the provider's answer, for the client. Reading delegates to the
    sideband socket (a few events per turn: the call's audio never comes this way).
    """

    def __init__(
        self,
        sideband: WsUpstream,
        call_id: str,
        answer_sdp: str,
        endpoint: CallEndpoint,
        deployment: Deployment,
        timeout: float,
    ) -> None:
        self.sideband = sideband
        self.call_id = call_id
        self.answer_sdp = answer_sdp
        self._endpoint = endpoint
        self._deployment = deployment
        self._timeout = timeout
        self.provider_ended = False
        """The provider closed the sideband (the call is over there): no hang-up to send."""
        self.hung_up = False

    @property
    def first_frames(self) -> list[Frame]:
        return self.sideband.first_frames

    @first_frames.setter
    def first_frames(self, frames: list[Frame]) -> None:
        self.sideband.first_frames = frames

    async def receive(self) -> list[Frame]:
        try:
            return await self.sideband.receive()
        except UpstreamClosed:
            self.provider_ended = True
            raise

    async def send(self, frames: Sequence[Frame]) -> None:
        await self.sideband.send(frames)

    async def ping(self) -> None:
        await self.sideband.ping()

    def pending_bytes(self) -> int:
        return self.sideband.pending_bytes()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.hang_up()
        await self.sideband.aclose(code, reason)

    async def abandon(self, code: int = 1000, reason: str = "") -> None:
        await self.hang_up()
        await self.sideband.abandon(code, reason)

    async def hang_up(self) -> None:
        """Tell the provider the call is over (once; never raises, bounded in time)."""
        if self.provider_ended or self.hung_up:
            return
        self.hung_up = True
        await hang_up_call(self._endpoint, self.call_id, self._deployment, self._timeout)


async def hang_up_call(
    endpoint: CallEndpoint, call_id: str, deployment: Deployment, timeout: float
) -> None:
    """``POST {calls_url}/{call_id}/hangup``; a failure is logged, never raised."""
    url = f"{endpoint.calls_url}/{call_id}/hangup"
    with trio.CancelScope(shield=True):
        try:
            reply = await request(
                "POST",
                url,
                endpoint.headers,
                tls=deployment.tls,
                timeout=min(timeout, HANGUP_TIMEOUT),
            )
        except UpstreamConnectError as exc:
            log.warning("hang-up of call %s on %s failed: %s", call_id, deployment.id, exc)
            return
    if reply.status >= 300 and reply.status != 404:  # 404: the call had ended already
        log.warning(
            "hang-up of call %s on %s answered HTTP %d", call_id, deployment.id, reply.status
        )


async def open_provider_call(
    deployment: Deployment,
    ctx: SessionContext,
    endpoint: CallEndpoint | None,
    open_sideband: Callable[[str], Awaitable[WsUpstream]],
) -> ProviderCallLink:
    """Post the offer to the deployment's calls endpoint, then open the call's sideband
    (``open_sideband(call_id)``, the provider's WebSocket dial)."""
    offer = ctx.call_offer
    if offer is None or endpoint is None:
        raise UpstreamConnectError(
            f"deployment {deployment.id} takes no WebRTC calls", kind="rejected"
        )
    session = call_session(offer, deployment)
    content_type, body = form_data(
        [
            ("sdp", "application/sdp", offer.sdp.encode()),
            ("session", "application/json", orjson.dumps(session)),
        ]
    )
    headers = {**endpoint.headers, "Content-Type": content_type, "Accept": "application/sdp"}
    reply = await request(
        "POST", endpoint.calls_url, headers, body, tls=deployment.tls, timeout=ctx.connect_timeout
    )
    if reply.status not in (200, 201):
        retry_after = retry_after_seconds(reply.headers.get("retry-after"))
        text = reply.body[:2048].decode("utf-8", "replace")
        raise UpstreamRejected(reply.status, text, retry_after=retry_after)
    call_id = provider_call_id(reply.headers.get("location"))
    answer = reply.body.decode("utf-8", "replace")
    if call_id is None or not answer.lstrip().startswith("v=0"):
        raise UpstreamConnectError(
            "the calls endpoint answered without an SDP answer and a Location", kind="rejected"
        )
    try:
        sideband = await open_sideband(call_id)
    except BaseException:
        # The provider holds a call nobody will follow: end it before failing over.
        await hang_up_call(endpoint, call_id, deployment, ctx.connect_timeout)
        raise
    return ProviderCallLink(sideband, call_id, answer, endpoint, deployment, ctx.connect_timeout)
