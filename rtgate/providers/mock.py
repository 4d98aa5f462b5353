"""The built-in ``mock/`` provider: an in-process realtime model, no network, no key.

It lets a newcomer try rtgate in a minute and serves smoke and load tests. The
model itself is the pure :class:`rtgate.mockmodel.translator.MockModel`; its upstream
link carries nothing (the translator answers the client directly).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from rtgate.config.model import Deployment
from rtgate.errors import UpstreamClosed
from rtgate.mockmodel.translator import MockModel
from rtgate.providers.base import SessionContext
from rtgate.translate.base import Translator
from rtgate.wire import Frame


class NullLink:
    """An upstream that never speaks; closing it ends ``receive``."""

    def __init__(self) -> None:
        self.first_frames: list[Frame] = []
        self._closed = trio.Event()

    async def receive(self) -> list[Frame]:
        await self._closed.wait()
        raise UpstreamClosed(1000, "closed")

    async def send(self, frames: Sequence[Frame]) -> None:
        if self._closed.is_set():
            raise UpstreamClosed(1000, "closed")

    async def ping(self) -> None:
        return None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self._closed.set()

    async def abandon(self, code: int = 1000, reason: str = "") -> None:
        self._closed.set()

    def pending_bytes(self) -> int:
        return 0


class MockProvider:
    name = "mock"
    warmable = False
    """The model runs in-process: there is nothing to dial."""

    def validate(self, deployment: Deployment) -> list[str]:
        reply_ms = deployment.params.get("reply_audio_ms")
        if reply_ms is not None and not (isinstance(reply_ms, int) and 0 < reply_ms <= 600_000):
            return ["reply_audio_ms must be an integer number of milliseconds (1..600000)"]
        return []

    async def connect(self, deployment: Deployment, ctx: SessionContext) -> NullLink:
        return NullLink()

    def translator(self, deployment: Deployment, ctx: SessionContext) -> Translator:
        reply_ms = deployment.params.get("reply_audio_ms")
        if isinstance(reply_ms, int):
            return MockModel(model=deployment.model, reply_audio_ms=reply_ms)
        return MockModel(model=deployment.model)


PROVIDER = MockProvider()
