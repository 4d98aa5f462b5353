"""xAI Grok Voice Agent: ``wss://api.x.ai/v1/realtime``, Bearer auth, GA names with quirks.

The quirks (``ping`` events, missing indices, ``usage: {}``, ``role: tool``, a
``conversation.created`` greeting) are normalised by :class:`XaiTranslator`.
"""

from __future__ import annotations

from urllib.parse import urlencode

from rtgate.config.model import Deployment
from rtgate.providers.base import SessionContext
from rtgate.providers.websocket import WebSocketProvider, WsTarget
from rtgate.translate.base import Translator
from rtgate.translate.xai import XaiTranslator

DEFAULT_BASE = "wss://api.x.ai/v1"


class XaiProvider(WebSocketProvider):
    name = "xai"

    def validate(self, deployment: Deployment) -> list[str]:
        return [] if deployment.api_key else ["xai deployments need litellm_params.api_key"]

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        base = deployment.api_base or DEFAULT_BASE
        headers = {
            "Authorization": f"Bearer {deployment.api_key.value if deployment.api_key else ''}"
        }
        query = urlencode({"model": deployment.model}) if deployment.model else ""
        return WsTarget(f"{base}/realtime" + (f"?{query}" if query else ""), headers)

    def translator(self, deployment: Deployment, ctx: SessionContext) -> Translator:
        return XaiTranslator()


PROVIDER = XaiProvider()
