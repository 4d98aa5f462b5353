"""Provider registry: the ``litellm_params.model`` prefix names the module that serves it.

Modules are imported on first use so a gateway that serves only OpenAI never
loads the Bedrock HTTP/2 stack.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from rtgate.config.model import Deployment
from rtgate.errors import UpstreamConnectError
from rtgate.providers.base import Provider, SessionContext

_Link = TypeVar("_Link")

# prefix -> module defining a module-level ``PROVIDER``
_MODULES = {
    "openai": "rtgate.providers.openai",
    "azure": "rtgate.providers.azure",
    "xai": "rtgate.providers.xai",
    "mock": "rtgate.providers.mock",
    "gemini": "rtgate.providers.gemini",
    "vertex_ai": "rtgate.providers.vertex",
    "bedrock": "rtgate.providers.bedrock",
}

KNOWN_PROVIDERS = tuple(_MODULES)

EXTRAS = {"bedrock": "bedrock", "vertex_ai": "vertex"}
"""Providers that need an optional dependency: the ``rtgate[EXTRA]`` that installs it."""

_loaded: dict[str, Provider] = {}


def get_provider(name: str) -> Provider:
    """The provider for a prefix; KeyError if rtgate has none by that name."""
    provider = _loaded.get(name)
    if provider is None:
        module = importlib.import_module(_MODULES[name])
        provider = module.PROVIDER
        _loaded[name] = provider
    return provider


async def connect_bounded(
    connect: Callable[[Deployment, SessionContext], Awaitable[_Link]],
    deployment: Deployment,
    ctx: SessionContext,
) -> _Link:
    """``connect(deployment, ctx)`` within the bound of a whole dial.

    A provider bounds each of its steps by ``ctx.connect_timeout``; this bounds
    them together, and reports running out of time as the dial failure it is
    (``UpstreamConnectError`` of kind ``timeout``), so every caller classifies
    failures one way.
    """
    try:
        with trio.fail_after(ctx.connect_timeout * 2 + 1):
            return await connect(deployment, ctx)
    except trio.TooSlowError:
        raise UpstreamConnectError(
            f"dialing deployment {deployment.id} timed out", kind="timeout"
        ) from None
