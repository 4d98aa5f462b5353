"""The pure core imports no I/O: checked on the import graph, not by convention."""

from __future__ import annotations

import subprocess
import sys

PURE = [
    "rtgate.errors",
    "rtgate.auth",
    "rtgate.config.model",
    "rtgate.config.load",
    "rtgate.protocol.events",
    "rtgate.protocol.beta",
    "rtgate.translate.base",
    "rtgate.translate.mock",
    "rtgate.translate.xai",
    "rtgate.translate.gemini",
    "rtgate.translate.nova",
    "rtgate.translate.audio",
    "rtgate.pool",
    "rtgate.telemetry.sampling",
]
IO = ("trio", "trio_websocket", "hypercorn", "rtgate.net", "rtgate.relay", "rtgate.server")


def test_pure_modules_pull_in_no_io_library() -> None:
    # A fresh interpreter: importing the pure modules must not load any I/O module.
    code = (
        "import sys\n"
        f"for name in {PURE!r}: __import__(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {IO!r} or m in {IO!r} "
        f"or any(m.startswith(p + '.') for p in {IO!r}))\n"
        "print('\\n'.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"pure modules imported I/O modules:\n{result.stdout}"
