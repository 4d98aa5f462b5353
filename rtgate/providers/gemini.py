"""Gemini Live on Google AI Studio: where to dial and which translator to use.

``wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent``
with the key in the ``x-goog-api-key`` header (never in the URL, where it
would reach logs). Gemini says nothing until it gets a ``setup``, so the dial
does not wait for a first event; the translator sends the setup.
"""

from __future__ import annotations

from rtgate.config.model import Deployment
from rtgate.net.upstream_ws import websocket_url
from rtgate.providers.base import SessionContext
from rtgate.providers.websocket import WebSocketProvider, WsTarget
from rtgate.translate.gemini.setup import model_path
from rtgate.translate.gemini.translator import GeminiTranslator

DEFAULT_HOST = "wss://generativelanguage.googleapis.com"
API_VERSIONS = ("v1beta", "v1alpha")


def setup_wait(deployment: Deployment) -> float:
    """Seconds to wait for the client's first ``session.update`` (``setup_wait_seconds``)."""
    value = deployment.params.get("setup_wait_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return 2.0


class GeminiProvider(WebSocketProvider):
    name = "gemini"
    greets_first = False

    def validate(self, deployment: Deployment) -> list[str]:
        problems = []
        if deployment.api_key is None:
            problems.append(
                "gemini deployments need litellm_params.api_key (a Google AI Studio key)"
            )
        version = deployment.api_version
        if version is not None and version not in API_VERSIONS:
            problems.append(f"gemini api_version must be one of {', '.join(API_VERSIONS)}")
        value = deployment.params.get("setup_wait_seconds")
        if value is not None and (
            not isinstance(value, int | float) or isinstance(value, bool) or value < 0
        ):
            problems.append("setup_wait_seconds must be a number >= 0")
        return problems

    def target(self, deployment: Deployment, ctx: SessionContext) -> WsTarget:
        host = websocket_url((deployment.api_base or DEFAULT_HOST).rstrip("/"))
        version = deployment.api_version or "v1beta"
        path = f"/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
        key = deployment.api_key.value if deployment.api_key else ""
        return WsTarget(host + path, {"x-goog-api-key": key})

    def translator(self, deployment: Deployment, ctx: SessionContext) -> GeminiTranslator:
        return GeminiTranslator(
            model_path=model_path(deployment.model),
            model_group=ctx.model_group,
            session_id=ctx.session_id,
            vertex=False,
            setup_wait=setup_wait(deployment),
            secrets=deployment.secret_values(),
        )


PROVIDER = GeminiProvider()
