"""Azure OpenAI Realtime.

GA (default): ``wss://{resource}.openai.azure.com/openai/v1/realtime?model=DEPLOYMENT``
with ``api-key`` (or an Entra token as Bearer); no ``api-version`` on that path,
Azure answers 401 to it (Azure migration guide, troubleshooting). The preview
path ``/openai/realtime?api-version=...&deployment=...`` speaks the beta shape and
is used only when a deployment sets ``realtime_path: preview``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from rtgate.config.model import Deployment
from rtgate.providers.base import SessionContext
from rtgate.providers.openai import realtime_query
from rtgate.providers.websocket import WebSocketProvider, WsTarget


def _resource_base(api_base: str) -> str:
    base = api_base.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


class AzureProvider(WebSocketProvider):
    name = "azure"

    def validate(self, deployment: Deployment) -> list[str]:
        problems = []
        if not deployment.api_base:
            problems.append(
                "azure deployments need litellm_params.api_base (https://RESOURCE.openai.azure.com)"
            )
        if not deployment.api_key and deployment.param_str("azure_ad_token") is None:
            problems.append("azure deployments need api_key or azure_ad_token")
        path = deployment.param_str("realtime_path") or "ga"
        if path not in ("ga", "preview"):
            problems.append("realtime_path must be ga or preview")
        if path == "preview" and not deployment.api_version:
            problems.append("the preview realtime path needs api_version")
        return problems

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        base = _resource_base(deployment.api_base or "")
        if deployment.api_key:
            headers = {"api-key": deployment.api_key.value}
        else:
            headers = {"Authorization": f"Bearer {deployment.param_str('azure_ad_token')}"}
        headers.update(ctx.forwarded_headers)
        if (deployment.param_str("realtime_path") or "ga") == "preview":
            query = urlencode(
                {"api-version": deployment.api_version or "", "deployment": deployment.model}
            )
            return WsTarget(f"{base}/openai/realtime?{query}", headers)
        return WsTarget(f"{base}/openai/v1/realtime?{realtime_query(deployment, ctx)}", headers)


PROVIDER = AzureProvider()
