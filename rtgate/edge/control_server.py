"""The control plane's hypercorn, kept serving when one of its connections breaks it.

hypercorn 0.18 can fail a whole server from one connection: when a request's bytes turn
out malformed while the app is still sending its response (for example an HTTP/1.0
request whose declared body never comes and whose client then goes), its reader task
sends an error response on the same stream as the app's send. trio refuses the second
concurrent send (``BusyResourceError``), and that exception leaves hypercorn's connection
task group, its listener's nursery and ``hypercorn.trio.serve`` itself. Unhandled, it
would end the gateway with every session on it.

:func:`serve_control_plane` contains it: the failure is logged as one WARNING line (the
client's request was broken; nothing of rtgate's) and hypercorn is started again on the
same socket at once; only the control requests in flight on that socket are lost, and
sessions never notice. :class:`QuietHypercornRaces` turns the same race's ``Error in ASGI
Framework`` traceback on the app side into the same kind of line.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

log = logging.getLogger("rtgate.control")

RESTART_PAUSE = 0.05
"""Between a failed hypercorn and the next one (bounds a restart loop's CPU)."""


def _leaves(exc: BaseException) -> str:
    """The innermost exceptions of a group, briefly (a log line, not a traceback)."""
    if isinstance(exc, BaseExceptionGroup):
        return ", ".join(_leaves(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _is_send_race(exc: BaseException) -> bool:
    """Only the concurrent-send race (and broken client streams) are contained."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_send_race(inner) for inner in exc.exceptions)
    return isinstance(exc, (trio.BusyResourceError, trio.BrokenResourceError))


class QuietHypercornRaces(logging.Filter):
    """Demote hypercorn's traceback for the send race to one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _is_send_race(exc):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "control request abandoned mid-answer: %s", (_leaves(exc),)
            record.exc_info = record.exc_text = None
        return True


async def serve_control_plane(
    app: Any,
    config: HypercornConfig,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.serve`` until ``stop``; started again after a contained failure.

    ``task_status`` is reported by the first hypercorn, once it listens; a failure before
    that (the socket cannot be bound) is not contained.
    """
    status: trio.TaskStatus[Any] = task_status
    while not stop.is_set():
        try:
            await hypercorn_serve(app, config, shutdown_trigger=stop.wait, task_status=status)
            return
        except Exception as exc:
            if not _is_send_race(exc):
                raise
            status = trio.TASK_STATUS_IGNORED
            log.warning(
                "control plane: a broken client connection stopped hypercorn (%s); serving again",
                _leaves(exc),
            )
            await trio.sleep(RESTART_PAUSE)
