"""Headless Chromium driven over the DevTools protocol (JSON over trio-websocket), for page tests.

``async with open_browser(tmp_path) as page: await page.goto(url)``. Only what the
tests need: navigate, evaluate, cookies, screenshot. Chromium is the Debian package.
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
]


def require_chromium() -> None:
    """Skip on a developer machine without Chromium; CI (CI=true) must have it."""
    if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip("chromium is not installed (apt-get install chromium)")


class Page:
    """One tab, attached with a flat session on the browser's DevTools socket."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.session_id: str | None = None
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if self.session_id is not None and not method.startswith("Target."):
            message["sessionId"] = self.session_id
        await self.ws.send_message(orjson.dumps(message).decode())
        while True:
            reply = orjson.loads(await self.ws.get_message())
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    async def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    del self.events[: i + 1]
                    return event
            self.events.append(orjson.loads(await self.ws.get_message()))

    async def goto(self, url: str) -> None:
        self.events.clear()
        await self.call("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def open_browser(tmp: Path, extra_flags: Sequence[str] = ()) -> AsyncIterator[Page]:
    profile = tmp / "chromium-profile"
    profile.mkdir()
    process = await trio.lowlevel.open_process(
        [CHROMIUM, *FLAGS, *extra_flags, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        with trio.fail_after(30):
            while not port_file.exists() or len(port_file.read_text().split()) < 2:
                await trio.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        async with open_websocket_url(
            f"ws://127.0.0.1:{port}{path}", max_message_size=64 * 1024 * 1024
        ) as ws:
            page = Page(ws)
            target = await page.call("Target.createTarget", url="about:blank")
            attached = await page.call(
                "Target.attachToTarget", targetId=target["targetId"], flatten=True
            )
            page.session_id = attached["sessionId"]
            await page.call("Page.enable")
            await page.call("Network.enable")
            yield page
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
