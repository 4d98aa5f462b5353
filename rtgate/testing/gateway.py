"""Run a whole gateway inside a test: ``async with open_gateway(yaml) as gw: ...``.

Binds 127.0.0.1 on a free port, serves until the block ends, then drains.
Shipped in the package (trio.testing style) so tests and benchmarks share it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

import trio

from rtgate.config.model import GatewayConfig
from rtgate.edge.configfile import parse_text
from rtgate.edge.server import ServerHandle, serve
from rtgate.telemetry.tap import ServedEventLog


@asynccontextmanager
async def open_gateway(
    config: str | GatewayConfig,
    *,
    env: Mapping[str, str] | None = None,
    event_log: ServedEventLog | None = None,
    metrics: object | None = None,
) -> AsyncIterator[ServerHandle]:
    """Start rtgate on 127.0.0.1:0 with ``config`` (YAML text or a loaded config)."""
    if isinstance(config, str):
        config = parse_text(config, path="<test>", env=env or {}).config
    async with trio.open_nursery() as nursery:
        handle: ServerHandle = await nursery.start(
            partial(serve, config, host="127.0.0.1", port=0, event_log=event_log, metrics=metrics)  # type: ignore[arg-type]
        )
        try:
            yield handle
        finally:
            handle.stop.set()
