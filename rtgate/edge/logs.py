"""Logging of the gateway itself: text or JSON lines on stderr (journald keeps them).

Secrets never reach a log line: every record passes through :func:`rtgate.errors.scrub`.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

from rtgate.errors import scrub


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ScrubFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RateLimitedLog:
    """Lines about client-caused errors: at most ``burst`` per ``interval`` seconds.

    A flood of bad requests must not become a flood of log lines: past the burst,
    lines are counted, and the first line of the next window says how many were
    left out. Time comes in as ``now`` (``trio.current_time()`` in the caller).
    """

    def __init__(self, logger: logging.Logger, *, interval: float = 10.0, burst: int = 10) -> None:
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self._window_start = float("-inf")
        self._in_window = 0
        self.left_out = 0
        """Lines not written since the last one that was."""

    def log(self, now: float, level: int, msg: str, *args: object) -> None:
        if now - self._window_start >= self.interval:
            self._window_start = now
            self._in_window = 0
        if self._in_window >= self.burst:
            self.left_out += 1
            return
        self._in_window += 1
        if self.left_out:
            msg += " (%d similar lines left out)"
            args = (*args, self.left_out)
            self.left_out = 0
        self.logger.log(level, msg, *args)
