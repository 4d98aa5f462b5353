"""xAI Grok Voice Agent: ``wss://api.x.ai/v1/realtime``, Bearer auth, GA names with quirks.

The URL is built as for OpenAI (LiteLLM's ``XAIRealtime`` is its OpenAI handler
with another default base): the same ``api_base`` rule, ``model``/``intent`` query.

The quirks (``ping`` events, missing indices, ``usage: {}``, ``role: tool``, a
``conversation.created`` greeting) are normalised by :class:`XaiTranslator`.
"""

from __future__ import annotations

from rtgate.config.model import Deployment
from rtgate.providers.base import SessionContext
from rtgate.providers.openai import realtime_query
from rtgate.providers.realtime_url import api_base_problems, openai_realtime_url
from rtgate.providers.websocket import WebSocketProvider, WsTarget
from rtgate.translate.base import Translator
from rtgate.translate.xai import XaiTranslator

DEFAULT_BASE = "wss://api.x.ai/v1"


class XaiProvider(WebSocketProvider):
    name = "xai"

    def validate(self, deployment: Deployment) -> list[str]:
        problems = api_base_problems(deployment.api_base)
        if not deployment.api_key:
            problems.append("xai deployments need litellm_params.api_key")
        return problems

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        base = deployment.api_base or DEFAULT_BASE
        headers = {
            "Authorization": f"Bearer {deployment.api_key.value if deployment.api_key else ''}"
        }
        return WsTarget(openai_realtime_url(base, realtime_query(deployment, ctx)), headers)

    def translator(self, deployment: Deployment, ctx: SessionContext) -> Translator:
        return XaiTranslator()


PROVIDER = XaiProvider()
