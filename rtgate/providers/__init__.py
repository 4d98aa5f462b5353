"""Provider registry: the ``litellm_params.model`` prefix names the module that serves it.

Modules are imported on first use so a gateway that serves only OpenAI never
loads the Bedrock HTTP/2 stack.
"""

from __future__ import annotations

import importlib

from rtgate.providers.base import Provider

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

_loaded: dict[str, Provider] = {}


def get_provider(name: str) -> Provider:
    """The provider for a prefix; KeyError if rtgate has none by that name."""
    provider = _loaded.get(name)
    if provider is None:
        module = importlib.import_module(_MODULES[name])
        provider = module.PROVIDER
        _loaded[name] = provider
    return provider
