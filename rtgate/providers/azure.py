"""Azure OpenAI Realtime.

GA (default): ``wss://{resource}.openai.azure.com/openai/v1/realtime?model=DEPLOYMENT``
with ``api-key`` (or an Entra token as Bearer); no ``api-version`` on that path,
Azure answers 401 to it (Azure migration guide, troubleshooting). The preview
path ``/openai/realtime?api-version=...&deployment=...`` speaks the beta shape and
is used only when a deployment sets ``realtime_path: preview`` (or LiteLLM's
``realtime_protocol: beta``); ``intent=transcription`` sessions always take the
GA path, as in LiteLLM. ``api_base`` is the resource (``https://RESOURCE.openai.azure.com``,
any scheme, trailing slash or ``/openai`` suffix): see :mod:`rtgate.providers.realtime_url`.
"""

from __future__ import annotations

from rtgate.config.model import Deployment
from rtgate.providers.base import SessionContext
from rtgate.providers.openai import realtime_query
from rtgate.providers.provider_calls import CallEndpoint
from rtgate.providers.realtime_url import (
    AZURE_GA_PATH,
    AZURE_PREVIEW_PATH,
    api_base_problems,
    azure_realtime_url,
    calls_url,
)
from rtgate.providers.websocket import WebSocketProvider, WsTarget

# LiteLLM's litellm_params.realtime_protocol values and the path each one means here.
_PROTOCOL_PATHS = {"ga": "ga", "v1": "ga", "beta": "preview"}


def realtime_path(deployment: Deployment) -> str | None:
    """``ga`` or ``preview`` from ``realtime_path`` or ``realtime_protocol`` (None: invalid)."""
    path = deployment.param_str("realtime_path")
    if path is not None:
        return path if path in ("ga", "preview") else None
    protocol = deployment.param_str("realtime_protocol")
    if protocol is not None:
        return _PROTOCOL_PATHS.get(protocol.lower())
    return "ga"


class AzureProvider(WebSocketProvider):
    name = "azure"

    def validate(self, deployment: Deployment) -> list[str]:
        problems = api_base_problems(deployment.api_base)
        if not deployment.api_base:
            problems.append(
                "azure deployments need litellm_params.api_base (https://RESOURCE.openai.azure.com)"
            )
        if not deployment.api_key and deployment.param_str("azure_ad_token") is None:
            problems.append("azure deployments need api_key or azure_ad_token")
        path = realtime_path(deployment)
        if path is None:
            problems.append(
                "realtime_path must be ga or preview (realtime_protocol: GA, v1 or beta)"
            )
        if path == "preview" and not deployment.api_version:
            problems.append("the preview realtime path needs api_version")
        return problems

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        base = deployment.api_base or ""
        headers = _headers(deployment, ctx)
        if realtime_path(deployment) == "preview" and ctx.intent != "transcription":
            query = [
                ("api-version", deployment.api_version or ""),
                ("deployment", deployment.model),
            ]
            return WsTarget(azure_realtime_url(base, AZURE_PREVIEW_PATH, query), headers)
        query = realtime_query(deployment, ctx)
        return WsTarget(azure_realtime_url(base, AZURE_GA_PATH, query), headers)

    def call_endpoint(self, deployment: Deployment, ctx: SessionContext) -> CallEndpoint | None:
        """The GA path's calls endpoint; the preview path has none (rtgate terminates those)."""
        if realtime_path(deployment) != "ga":
            return None
        url = calls_url(azure_realtime_url(deployment.api_base or "", AZURE_GA_PATH, []))
        return CallEndpoint(url, _headers(deployment, ctx))

    def sideband_target(
        self, deployment: Deployment, ctx: SessionContext, call_id: str
    ) -> WsTarget:
        base = deployment.api_base or ""
        url = azure_realtime_url(base, AZURE_GA_PATH, [("call_id", call_id)])
        return WsTarget(url, _headers(deployment, ctx))


def _headers(deployment: Deployment, ctx: SessionContext) -> dict[str, str]:
    if deployment.api_key:
        headers = {"api-key": deployment.api_key.value}
    else:
        headers = {"Authorization": f"Bearer {deployment.param_str('azure_ad_token')}"}
    headers.update(ctx.forwarded_headers)
    return headers


PROVIDER = AzureProvider()
