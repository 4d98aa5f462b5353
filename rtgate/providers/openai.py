"""OpenAI Realtime (GA): ``wss://api.openai.com/v1/realtime?model=M``, Bearer auth.

GA only: the beta header is never forwarded (OpenAI closes beta sessions with
4000 ``beta_api_shape_disabled``; beta clients are bridged before this point).
"""

from __future__ import annotations

from urllib.parse import urlencode

from rtgate.config.model import Deployment
from rtgate.providers.base import SessionContext
from rtgate.providers.websocket import WebSocketProvider, WsTarget

DEFAULT_BASE = "wss://api.openai.com/v1"


def realtime_query(deployment: Deployment, ctx: SessionContext) -> str:
    """``model=`` for conversations, ``intent=transcription`` (no model) for transcription."""
    query: dict[str, str] = {}
    if ctx.intent == "transcription":
        query["intent"] = "transcription"
    else:
        query["model"] = deployment.model
    query.update(ctx.forwarded_query)
    return urlencode(query)


class OpenAIProvider(WebSocketProvider):
    name = "openai"

    def validate(self, deployment: Deployment) -> list[str]:
        return [] if deployment.api_key else ["openai deployments need litellm_params.api_key"]

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        base = deployment.api_base or DEFAULT_BASE
        headers = {
            "Authorization": f"Bearer {deployment.api_key.value if deployment.api_key else ''}"
        }
        headers.update(ctx.forwarded_headers)
        return WsTarget(f"{base}/realtime?{realtime_query(deployment, ctx)}", headers)


PROVIDER = OpenAIProvider()
