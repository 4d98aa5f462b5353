"""Gemini Live on Vertex AI: regional endpoint, project model path, OAuth2 bearer.

``wss://{location}-aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent``
(``global`` -> ``aiplatform.googleapis.com``), model
``projects/{p}/locations/{l}/publishers/google/models/{m}``, and an access token
from the service account in ``vertex_credentials`` (a path or inline JSON; the
``GOOGLE_APPLICATION_CREDENTIALS`` file when absent). Parameters use LiteLLM's
names: ``vertex_project``, ``vertex_location``, ``vertex_credentials``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rtgate.config.model import Deployment
from rtgate.errors import UpstreamConnectError
from rtgate.net.upstream_ws import websocket_url
from rtgate.providers.base import SessionContext
from rtgate.providers.gemini import setup_wait
from rtgate.providers.google_auth import ServiceAccount, token_source
from rtgate.providers.websocket import WebSocketProvider, WsTarget
from rtgate.translate.gemini.setup import model_path
from rtgate.translate.gemini.translator import GeminiTranslator

DEFAULT_LOCATION = "us-central1"
PATH = "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
TOKEN_TIMEOUT = 10.0


def credentials_value(deployment: Deployment) -> str | None:
    return deployment.param_str("vertex_credentials") or os.environ.get(
        "GOOGLE_APPLICATION_CREDENTIALS"
    )


_accounts: dict[str, ServiceAccount] = {}


def account_of(deployment: Deployment) -> ServiceAccount:
    """The deployment's service account (parsed once per distinct value)."""
    value = credentials_value(deployment)
    if not value:
        raise ValueError("vertex_ai deployments need litellm_params.vertex_credentials")
    account = _accounts.get(value)
    if account is None:
        account = _accounts[value] = ServiceAccount.load(value)
    return account


def project_of(deployment: Deployment, account: ServiceAccount | None) -> str | None:
    return deployment.param_str("vertex_project") or (account.project_id if account else None)


def location_of(deployment: Deployment) -> str:
    return deployment.param_str("vertex_location") or DEFAULT_LOCATION


def host_for(location: str) -> str:
    if location == "global":
        return "wss://aiplatform.googleapis.com"
    return f"wss://{location}-aiplatform.googleapis.com"


class VertexProvider(WebSocketProvider):
    name = "vertex_ai"
    greets_first = False

    def validate(self, deployment: Deployment) -> list[str]:
        try:
            account: ServiceAccount | None = account_of(deployment)
        except ValueError as exc:
            return [str(exc)]
        if project_of(deployment, account) is None:
            return ["vertex_ai deployments need litellm_params.vertex_project"]
        return []

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        location = location_of(deployment)
        base = deployment.api_base or host_for(location)
        return WsTarget(websocket_url(base.rstrip("/")) + PATH, {})

    async def headers(self, deployment: Deployment, target: WsTarget) -> Mapping[str, str]:
        try:
            account = account_of(deployment)
        except ValueError as exc:
            raise UpstreamConnectError(str(exc), kind="auth") from None
        token = await token_source(account).token(timeout=TOKEN_TIMEOUT)
        headers = {"Authorization": f"Bearer {token}"}
        if account.quota_project_id:
            headers["x-goog-user-project"] = account.quota_project_id
        return headers

    def translator(self, deployment: Deployment, ctx: SessionContext) -> GeminiTranslator:
        try:
            account: ServiceAccount | None = account_of(deployment)
        except ValueError:
            account = None
        project = project_of(deployment, account) or ""
        path = model_path(
            deployment.model, vertex_project=project, vertex_location=location_of(deployment)
        )
        return GeminiTranslator(
            model_path=path,
            model_group=ctx.model_group,
            session_id=ctx.session_id,
            vertex=True,
            setup_wait=setup_wait(deployment),
            secrets=deployment.secret_values(),
        )


PROVIDER = VertexProvider()
