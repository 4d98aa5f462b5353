"""Load a config file with every check: the pure loader plus what only the edge can ask.

:mod:`rtgate.config.load` reads the file and checks what the config package knows.
Which providers exist, what each needs, whether a warm pool fits the provider and
whether an event-log sink can be built are questions for ``providers/``, ``pool/``
and ``telemetry/``; :class:`EdgeChecks` asks them, and :func:`load_config` and
:func:`parse_text` are the loader with these checks, for everything that serves or
checks a config (``rtgate serve``, ``rtgate check``, reload, the test gateway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rtgate.config import load
from rtgate.config.load import LoadResult
from rtgate.config.model import Deployment
from rtgate.errors import ConfigError
from rtgate.pool.warm_policy import settings_problems
from rtgate.providers import EXTRAS, KNOWN_PROVIDERS, get_provider
from rtgate.providers.base import Provider
from rtgate.telemetry.sinks import build_sink


class EdgeChecks:
    """:class:`rtgate.config.checks.ConfigChecks` answered by the providers, pool and sinks."""

    def provider_names(self) -> Sequence[str]:
        return KNOWN_PROVIDERS

    def deployment_problems(self, deployment: Deployment) -> list[str]:
        provider = _provider(deployment)
        if provider is None:
            extra = EXTRAS.get(deployment.provider)
            if extra is not None:
                return [
                    f"provider {deployment.provider!r} needs an optional dependency that is not "
                    f"installed: pip install 'rtgate[{extra}]'"
                ]
            return [f"provider {deployment.provider!r} is not available in this build"]
        return provider.validate(deployment)

    def warm_pool_problems(self, deployment: Deployment) -> list[str]:
        provider = _provider(deployment)
        return settings_problems(deployment, provider is not None and provider.warmable)

    def sink_problem(self, spec: Mapping[str, object], index: int) -> str | None:
        try:
            build_sink(spec, index)
        except ConfigError as exc:
            return exc.message
        return None


def _provider(deployment: Deployment) -> Provider | None:
    try:
        return get_provider(deployment.provider)
    except (KeyError, ImportError, AttributeError):  # a module missing from this install
        return None


CHECKS = EdgeChecks()


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> LoadResult:
    """:func:`rtgate.config.load.load_config` with every check."""
    return load.load_config(path, env, checks=CHECKS)


def parse_text(
    text: str, *, path: str = "<config>", env: Mapping[str, str] | None = None
) -> LoadResult:
    """:func:`rtgate.config.load.parse_text` with every check."""
    return load.parse_text(text, path=path, env=env, checks=CHECKS)
