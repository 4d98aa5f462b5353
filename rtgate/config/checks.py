"""The checks the loader cannot make itself: what only the layers above config know.

Owns the :class:`ConfigChecks` seam. The loader is pure and imports no provider,
pool or sink code; the process edge (:mod:`rtgate.edge.configfile`) passes an
implementation that asks them. The loader calls each check where it still
holds the YAML node, so every problem keeps its ``file:line``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from rtgate.config.model import Deployment


class ConfigChecks(Protocol):
    """Validation that needs the providers, the warm-pool policy and the sinks."""

    def provider_names(self) -> Sequence[str]:
        """The ``litellm_params.model`` prefixes this build serves."""

    def deployment_problems(self, deployment: Deployment) -> list[str]:
        """What the deployment's provider misses (human sentences; empty: fine).

        A provider this build cannot load is a problem too, not an exception.
        """

    def warm_pool_problems(self, deployment: Deployment) -> list[str]:
        """Why ``deployment.warm_pool`` cannot be honoured (empty: fine or none asked)."""

    def sink_problem(self, spec: Mapping[str, object], index: int) -> str | None:
        """What is wrong with one ``rtgate.event_log.sinks`` entry, or None."""
