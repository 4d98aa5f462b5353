"""Shared connect logic for providers that speak a WebSocket (OpenAI, Azure, xAI, Gemini).

A subclass says only where to dial (:meth:`target`: URL, headers,
subprotocols, all pure) and whether the provider greets first; dialing,
TLS, the first-event check and error classes live here once.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from rtgate.config.model import Deployment
from rtgate.net.upstream_ws import WsUpstream, dial_websocket
from rtgate.providers.base import SessionContext
from rtgate.providers.provider_calls import CallEndpoint, ProviderCallLink, open_provider_call
from rtgate.translate.base import Translator


@attrs.frozen
class WsTarget:
    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    subprotocols: tuple[str, ...] = ()


class WebSocketProvider:
    """Base for WebSocket providers; subclasses set ``name`` and implement ``target``."""

    name = "websocket"
    greets_first = True
    """The provider sends an event as soon as the socket opens (OpenAI's ``session.created``)."""
    warmable = True
    """Connections can be opened before a client asks (``warm_pool``): the dial depends only
    on :meth:`target`, which :mod:`rtgate.session.warm_pool` compares per session."""

    def validate(self, deployment: Deployment) -> list[str]:
        return []

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        raise TypeError(f"{type(self).__name__} must define target()")

    def translator(self, deployment: Deployment, ctx: SessionContext) -> Translator:
        return Translator()

    async def headers(self, deployment: Deployment, target: WsTarget) -> Mapping[str, str]:
        """Final headers; a provider with refreshable credentials overrides this."""
        return target.headers

    def call_endpoint(self, deployment: Deployment, ctx: SessionContext) -> CallEndpoint | None:
        """Where this deployment takes WebRTC calls itself (None: rtgate terminates them)."""
        return None

    def sideband_target(
        self, deployment: Deployment, ctx: SessionContext, call_id: str
    ) -> WsTarget:
        """The WebSocket that follows call ``call_id`` (providers with a calls endpoint)."""
        raise TypeError(f"{type(self).__name__} takes no WebRTC calls")

    async def connect(
        self, deployment: Deployment, ctx: SessionContext
    ) -> WsUpstream | ProviderCallLink:
        if ctx.call_offer is not None:

            async def open_sideband(call_id: str) -> WsUpstream:
                return await self._dial(
                    self.sideband_target(deployment, ctx, call_id), deployment, ctx
                )

            endpoint = self.call_endpoint(deployment, ctx)
            return await open_provider_call(deployment, ctx, endpoint, open_sideband)
        return await self.connect_websocket(deployment, ctx)

    async def connect_websocket(self, deployment: Deployment, ctx: SessionContext) -> WsUpstream:
        """A WebSocket session with the model (what warm pools hold)."""
        link = await self._dial(self.target(deployment, ctx), deployment, ctx)
        if self.greets_first:
            await link.read_first(ctx.connect_timeout)
        return link

    async def _dial(
        self, target: WsTarget, deployment: Deployment, ctx: SessionContext
    ) -> WsUpstream:
        return await dial_websocket(
            target.url,
            await self.headers(deployment, target),
            target.subprotocols,
            tls=deployment.tls,
            max_message_bytes=ctx.max_message_bytes,
            timeout=ctx.connect_timeout,
        )
