"""The one asyncio event loop every terminated call's aiortc objects live on, on its own thread.

aiortc is asyncio; the rest of rtgate is trio. The loop starts on the first call and stops
with the server. Trio code reaches it through :meth:`AsyncioThread.run` (a coroutine run
there, its result awaited here without blocking trio) and :meth:`AsyncioThread.soon`
(a plain callback, fire and forget); the loop reaches trio through a ``TrioToken``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class PortRangeLoop(asyncio.SelectorEventLoop):
    """An event loop whose UDP sockets bound to "any port" take one from a range instead.

    aioice binds each host candidate with ``local_addr=(address, 0)`` and has no port
    setting; this loop serves only aiortc, so that request is answered here: the range is
    tried from a rotating start, skipping ports in use. Other sockets are untouched.
    """

    def __init__(self, ports: tuple[int, int]) -> None:
        super().__init__()
        self._first, self._last = ports
        self._next = ports[0]

    async def create_datagram_endpoint(
        self, protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None, **kw: Any
    ) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await super().create_datagram_endpoint(
                protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kw
            )
        size = self._last - self._first + 1
        for _ in range(size):
            port = self._next
            self._next = self._first if port >= self._last else port + 1
            try:
                return await super().create_datagram_endpoint(
                    protocol_factory,
                    local_addr=(local_addr[0], port),
                    remote_addr=remote_addr,
                    **kw,
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {self._first}-{self._last}")


class AsyncioThread:
    """An asyncio loop on a daemon thread, started lazily (UDP ports from ``udp_ports``)."""

    def __init__(
        self, name: str = "rtgate-webrtc", *, udp_ports: tuple[int, int] | None = None
    ) -> None:
        self._name = name
        self._udp_ports = udp_ports
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                ports = self._udp_ports
                loop = PortRangeLoop(ports) if ports else asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop's thread (never blocks; ignored once stopped)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # closed between the check and the call
                pass

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await its result from trio (cancelling it if we are)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def finished(_: concurrent.futures.Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future.add_done_callback(finished)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    async def aclose(self) -> None:
        """Stop the loop (after the coroutines it runs got a last turn) and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            asyncio.get_running_loop().stop()

        asyncio.run_coroutine_threadsafe(finish(), loop)
        await trio.to_thread.run_sync(thread.join, 5.0, abandon_on_cancel=True)
        if not thread.is_alive():
            loop.close()
