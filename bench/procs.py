"""Child processes of the benchmarks and what they are measured with, shared by every stage.

Owns: the interpreter and repository root the children run from, the core
layout (the proxy under test on ``PROXY_CORE``, load generator and fake
upstream on ``LOAD_CORE``) and ``taskset`` pinning, free ports and waiting for
a listener, starting and stopping a child (:func:`process`), the pinned fake
upstream and the pinned single rtgate worker with its bench config, and the
``/proc`` readers: child pids, per-thread pinning, established sessions of a
process, busy ticks of cores.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
PROXY_CORE = "0"
LOAD_CORE = "1"


def cpu_count() -> int:
    return os.cpu_count() or 1


def pin(cores: str) -> list[str]:
    """``taskset`` prefix for a core list such as ``"1"`` or ``"0,1"`` (nothing on one core)."""
    return ["taskset", "-c", cores] if shutil.which("taskset") and cpu_count() > 1 else []


def core_list(cores: Sequence[int]) -> str:
    return ",".join(str(c) for c in cores)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


@contextlib.contextmanager
def process(
    argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, terminated (then killed) on exit; its output goes to ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def fake_upstream(
    workdir: Path, cores: str = LOAD_CORE, *, tls_cert: Path | None = None
) -> Iterator[tuple[int, int]]:
    """(port, pid) of a fake upstream pinned to ``cores`` (the load core by default);
    ``tls_cert``: serve ``wss://`` with that PEM (see :func:`tls_files`)."""
    port = free_port()
    argv = [*pin(cores), PYTHON, "-m", "bench.fake_upstream", "--port", str(port)]
    if tls_cert is not None:
        argv += ["--tls-cert", str(tls_cert)]
    with process(argv, log=workdir / f"fake_upstream-{port}.log") as proc:
        wait_port(port, proc=proc)
        yield port, proc.pid


def tls_files(workdir: Path) -> tuple[Path, Path]:
    """(server PEM with key and chain, CA PEM) for a ``wss://`` fake upstream on 127.0.0.1."""
    import trustme  # a dev dependency; only the TLS measurements need it

    ca = trustme.CA()
    server, ca_pem = workdir / "fake-upstream-tls.pem", workdir / "fake-upstream-ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server))
    ca.cert_pem.write_to_path(str(ca_pem))
    return server, ca_pem


def openai_deployment(upstream_port: int, *, ca_bundle: Path | None = None) -> str:
    """A ``bench-openai`` entry of ``model_list`` for the fake upstream on that port
    (``wss://`` trusting ``ca_bundle`` when given)."""
    scheme = "ws" if ca_bundle is None else "wss"
    trust = "" if ca_bundle is None else f"      ca_bundle: {ca_bundle}\n"
    return f"""\
  - model_name: bench-openai
    litellm_params:
      model: openai/gpt-realtime
      api_base: {scheme}://127.0.0.1:{upstream_port}/v1
      api_key: sk-bench-not-a-real-key
{trust}\
    model_info:
      mode: realtime
"""


def tls_gateway_config(upstream_port: int, ca_bundle: Path) -> str:
    """rtgate's bench config with ``bench-openai`` on a ``wss://`` fake upstream."""
    return f"""\
model_list:
{openai_deployment(upstream_port, ca_bundle=ca_bundle)}\
rtgate:
  host: 127.0.0.1
  log_level: warning
"""


def gateway_config(upstream_port: int) -> str:
    return f"""\
model_list:
{openai_deployment(upstream_port)}\
  - model_name: bench-gemini
    litellm_params:
      model: gemini/gemini-2.0-flash-live-001
      api_base: ws://127.0.0.1:{upstream_port}
      api_key: bench-not-a-real-gemini-key
    model_info:
      mode: realtime
  - model_name: mock-realtime
    litellm_params:
      model: mock/gpt-realtime
      reply_audio_ms: 200
    model_info:
      mode: realtime
rtgate:
  host: 127.0.0.1
  log_level: warning
"""


def rtgate_serve(config: Path, port: int, *extra: str) -> list[str]:
    """The command line of ``rtgate serve`` on 127.0.0.1:``port`` (unpinned)."""
    serve = [PYTHON, "-m", "rtgate", "serve", "-c", str(config)]
    return [*serve, "--host", "127.0.0.1", "--port", str(port), *extra]


@contextlib.contextmanager
def rtgate(
    workdir: Path, upstream_port: int, config_text: str | None = None, *, tree: Path = ROOT
) -> Iterator[tuple[int, int]]:
    """(port, pid) of one rtgate worker pinned to the proxy core (the bench config unless
    ``config_text`` is given), running the code of source ``tree``: its working directory
    and ``PYTHONPATH`` (``python -m`` puts the working directory first on ``sys.path``,
    so the directory alone decides which rtgate is imported)."""
    config = workdir / "rtgate.yaml"
    config.write_text(config_text or gateway_config(upstream_port))
    config.chmod(0o600)  # rtgate refuses plain-text secrets in a world-readable file
    port = free_port()
    argv = [*pin(PROXY_CORE), *rtgate_serve(config, port)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with process(argv, log=workdir / "rtgate.log", env=env, cwd=tree) as proc:
        wait_port(port, proc=proc)
        yield port, proc.pid


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them (trio uses a thread)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tids:
        with contextlib.suppress(OSError):
            found += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return sorted(found)


def pin_threads(pid: int, core: int) -> None:
    """Pin every thread of ``pid`` to ``core`` (``sched_setaffinity`` takes one thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {core})


def established_sessions(pid: int, port: int) -> int:
    """Client connections to ``port`` that ``pid`` holds (its share of SO_REUSEPORT)."""
    inodes: set[str] = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                count += 1
    return count


def core_ticks(cores: Sequence[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of ``cores`` since boot (``/proc/stat``; steal counts as busy)."""
    wanted = {f"cpu{c}" for c in cores}
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name in wanted:
                fields = [int(v) for v in values[:8]]
                total += sum(fields)
                busy += sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    return busy, total


def sleep_until(monotonic_ns: int) -> None:
    delay = (monotonic_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)
