"""Amazon Nova Sonic on Bedrock (``bedrock/amazon.nova-sonic-v1:0``): dial and translate.

``connect`` resolves credentials and region (:mod:`rtgate.aws.credentials`),
signs ``POST /model/{modelId}/invoke-with-bidirectional-stream`` with SigV4
(service ``bedrock``), opens the HTTP/2 stream (:mod:`rtgate.aws.h2stream`)
and returns a :class:`~rtgate.aws.h2stream.BedrockLink` whose events are
signed in a chain seeded by the request signature.

A non-200 answer raises :class:`UpstreamRejected` so the pool fails over.
Whether Bedrock answers the request headers before the first event arrives
is not documented, so ``connect`` waits for them only ``response_header_wait``
seconds (default 1); a status that comes later still ends the session with
the same classification.

Deployment parameters (``litellm_params``): ``aws_access_key_id``,
``aws_secret_access_key``, ``aws_session_token``, ``aws_region_name``,
``aws_profile_name``; ``api_base`` (``https://host[:port]``) overrides
``bedrock-runtime.{region}.amazonaws.com`` (with ``tls.ca_bundle`` /
``tls.verify``); Nova defaults ``voice``, ``max_tokens``, ``temperature``,
``top_p``, ``endpointing_sensitivity``, ``session_start_timeout``.
"""

from __future__ import annotations

import datetime as dt
import ssl
from urllib.parse import quote, urlsplit

import trio

from rtgate.aws.credentials import CredentialSource, configured_region, static_credentials
from rtgate.aws.h2stream import BedrockLink, H2Stream, reject_from_response
from rtgate.aws.sigv4 import EventSigner, sign_request
from rtgate.config.model import Deployment, TlsSettings
from rtgate.errors import UpstreamClosed, UpstreamConnectError
from rtgate.providers.base import SessionContext, UpstreamLink
from rtgate.translate.base import Translator
from rtgate.translate.nova.translator import NovaDefaults, NovaTranslator

SERVICE = "bedrock"
DEFAULT_HEADER_WAIT = 1.0


def endpoint(deployment: Deployment, region: str) -> tuple[str, int]:
    """Host and port to dial: ``api_base`` if set, else the regional Bedrock runtime."""
    if deployment.api_base:
        base = deployment.api_base
        parts = urlsplit(base if "://" in base else f"https://{base}")
        return parts.hostname or "", parts.port or 443
    return f"bedrock-runtime.{region}.amazonaws.com", 443


def request_path(model: str) -> str:
    """The model id percent-encoded (``:`` -> ``%3A``); SigV4 then encodes the path again."""
    return f"/model/{quote(model, safe='')}/invoke-with-bidirectional-stream"


def _float_param(deployment: Deployment, name: str, default: float) -> float:
    raw = deployment.param_str(name)
    try:
        return float(raw) if raw is not None else default
    except ValueError:
        return default


def nova_defaults(deployment: Deployment) -> NovaDefaults:
    base = NovaDefaults()
    return NovaDefaults(
        voice=deployment.param_str("voice") or base.voice,
        max_tokens=int(_float_param(deployment, "max_tokens", base.max_tokens)),
        temperature=_float_param(deployment, "temperature", base.temperature),
        top_p=_float_param(deployment, "top_p", base.top_p),
        endpointing_sensitivity=(deployment.param_str("endpointing_sensitivity") or "").upper()
        or None,
        setup_timeout=_float_param(deployment, "session_start_timeout", base.setup_timeout),
    )


class BedrockProvider:
    """The ``bedrock`` provider (see module docstring)."""

    name = "bedrock"
    warmable = False
    """A session is one HTTP/2 stream signed for its own request: nothing to open early."""

    def __init__(self) -> None:
        self._sources: dict[str, tuple[Deployment, CredentialSource]] = {}
        self._ssl: dict[TlsSettings, ssl.SSLContext] = {}

    def validate(self, deployment: Deployment) -> list[str]:
        problems: list[str] = []
        if not deployment.model:
            problems.append("a Bedrock model id is required (bedrock/amazon.nova-sonic-v1:0)")
        has_id = deployment.param_str("aws_access_key_id")
        has_secret = deployment.param_str("aws_secret_access_key")
        if bool(has_id) != bool(has_secret):
            problems.append("aws_access_key_id and aws_secret_access_key go together")
        if configured_region(deployment) is None and not deployment.param_str("aws_profile_name"):
            problems.append("no AWS region: set aws_region_name (or AWS_REGION)")
        if deployment.api_base:
            scheme = urlsplit(deployment.api_base).scheme
            if scheme not in ("https", "") and "://" in deployment.api_base:
                problems.append("api_base must be https:// (Bedrock streams need HTTP/2 over TLS)")
        sensitivity = deployment.param_str("endpointing_sensitivity")
        if sensitivity and sensitivity.upper() not in ("HIGH", "MEDIUM", "LOW"):
            problems.append("endpointing_sensitivity must be HIGH, MEDIUM or LOW")
        return problems

    def _source(self, deployment: Deployment) -> CredentialSource:
        known = self._sources.get(deployment.id)
        if known is None or known[0] != deployment:
            known = (deployment, CredentialSource(deployment))
            self._sources[deployment.id] = known
        return known[1]

    def _ssl_context(self, tls: TlsSettings) -> ssl.SSLContext:
        context = self._ssl.get(tls)
        if context is None:
            context = ssl.create_default_context(cafile=tls.ca_bundle)
            if not tls.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            self._ssl[tls] = context
        return context

    async def connect(self, deployment: Deployment, ctx: SessionContext) -> UpstreamLink:
        source = self._source(deployment)
        credentials = await source.get()
        region = await source.region()
        host, port = endpoint(deployment, region)
        authority = host if port == 443 else f"{host}:{port}"
        path = request_path(deployment.model)
        signed = sign_request(
            "POST",
            f"https://{authority}{path}",
            {"host": authority, "content-type": "application/vnd.amazon.eventstream"},
            credentials,
            region=region,
            service=SERVICE,
            now=dt.datetime.now(dt.UTC),
        )
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", authority)]
        headers.append((":path", path))
        headers += [(k.lower(), v) for k, v in signed.headers.items() if k.lower() != "host"]
        secrets = deployment.secret_values() + credentials.secrets()
        stream = await H2Stream.open(
            host, port, ssl_context=self._ssl_context(deployment.tls), headers=headers
        )
        try:
            status: int | None = None
            with trio.move_on_after(
                _float_param(deployment, "response_header_wait", DEFAULT_HEADER_WAIT)
            ):
                status = await stream.wait_response()
            if status is not None and status != 200:
                raise await reject_from_response(stream, status, secrets)
        except UpstreamClosed as exc:
            await stream.aclose()
            raise UpstreamConnectError(
                f"Bedrock closed the connection: {exc.reason}", kind="closed"
            )
        except BaseException:
            await stream.aclose()
            raise
        signer = EventSigner(
            credentials, region=region, service=SERVICE, seed_signature=signed.signature
        )
        return BedrockLink(stream, signer, secrets=secrets)

    def translator(self, deployment: Deployment, ctx: SessionContext) -> Translator:
        return NovaTranslator(deployment.model, nova_defaults(deployment))


PROVIDER = BedrockProvider()

__all__ = ["PROVIDER", "BedrockProvider", "endpoint", "request_path", "static_credentials"]
