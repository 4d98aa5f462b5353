"""A throwaway PostgreSQL cluster on a loopback port, for the tests that need one.

The Debian package's binaries (``/usr/lib/postgresql/N/bin``) run as the ``postgres``
user (the package creates it) when the tests run as root (initdb and postgres refuse root), in a fresh directory
that user owns; ``stop()`` and ``start()`` let a test take the database away mid-run.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_ops_support import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PgCluster:
    """``url`` is ``postgresql://rtgate@127.0.0.1:PORT/postgres`` (trust auth on loopback)."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="rtgate-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.data.mkdir(mode=0o700)
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            shutil.chown(self.data, self.user, self.user)
            shutil.chown(self.root, self.user, self.user)
        self.port = free_port()
        self.url = f"postgresql://rtgate@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None
        self._run(["initdb", "-D", str(self.data), "-A", "trust", "-U", "rtgate", "--no-sync",
                   "-E", "UTF8"])  # fmt: skip

    def _command(self, argv: list[str]) -> list[str]:
        return [str(self.bin / argv[0]), *argv[1:]]

    def _run(self, argv: list[str]) -> None:
        subprocess.run(self._command(argv), check=True, capture_output=True, timeout=60,
                       user=self.user, group=self.user, cwd=self.root)  # fmt: skip

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._command(["postgres", "-D", str(self.data), "-p", str(self.port),
                           "-h", "127.0.0.1", "-k", str(self.root), "-c", "fsync=off",
                           "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            user=self.user, group=self.user, cwd=self.root,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        import psycopg

        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: sessions are cut
            self.process.wait(timeout=30)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
