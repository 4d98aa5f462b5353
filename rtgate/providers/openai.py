"""OpenAI Realtime (GA): ``wss://api.openai.com/v1/realtime?model=M``, Bearer auth.

``api_base`` is joined as LiteLLM joins it (:mod:`rtgate.providers.realtime_url`).
GA only: the beta header is never forwarded (OpenAI closes beta sessions with
4000 ``beta_api_shape_disabled``; beta clients are bridged before this point).
"""

from __future__ import annotations

from rtgate.config.model import Deployment
from rtgate.providers.base import SessionContext
from rtgate.providers.provider_calls import CallEndpoint
from rtgate.providers.realtime_url import api_base_problems, calls_url, openai_realtime_url
from rtgate.providers.websocket import WebSocketProvider, WsTarget

DEFAULT_BASE = "wss://api.openai.com/v1"


def realtime_query(deployment: Deployment, ctx: SessionContext) -> list[tuple[str, str]]:
    """``model=`` for conversations, ``intent=transcription`` (no model) for transcription."""
    query: dict[str, str] = {}
    if ctx.intent == "transcription":
        query["intent"] = "transcription"
    else:
        query["model"] = deployment.model
    query.update(ctx.forwarded_query)
    return list(query.items())


class OpenAIProvider(WebSocketProvider):
    name = "openai"

    def validate(self, deployment: Deployment) -> list[str]:
        problems = api_base_problems(deployment.api_base)
        if not deployment.api_key:
            problems.append("openai deployments need litellm_params.api_key")
        return problems

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        base = deployment.api_base or DEFAULT_BASE
        return WsTarget(
            openai_realtime_url(base, realtime_query(deployment, ctx)), _headers(deployment, ctx)
        )

    def call_endpoint(self, deployment: Deployment, ctx: SessionContext) -> CallEndpoint:
        base = deployment.api_base or DEFAULT_BASE
        url = calls_url(openai_realtime_url(base, []))
        return CallEndpoint(url, _headers(deployment, ctx))

    def sideband_target(
        self, deployment: Deployment, ctx: SessionContext, call_id: str
    ) -> WsTarget:
        base = deployment.api_base or DEFAULT_BASE
        return WsTarget(
            openai_realtime_url(base, [("call_id", call_id)]), _headers(deployment, ctx)
        )


def _headers(deployment: Deployment, ctx: SessionContext) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {deployment.api_key.value if deployment.api_key else ''}"}
    headers.update(ctx.forwarded_headers)
    return headers


PROVIDER = OpenAIProvider()
