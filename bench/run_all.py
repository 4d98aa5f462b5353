"""Run every rtgate benchmark side by side in one go; write JSON, a markdown table, a chart.

Layout on a 2-core machine: the proxy under test (rtgate, nginx, LiteLLM) is
pinned to core 0, the load generator and the fake upstream share core 1, so
what is measured on core 0 is the proxy alone. Every proxy relays to the same
:mod:`bench.fake_upstream`; "direct" runs connect the generator to the fake
itself, and added latency is the proxied figure minus the direct one.

Measured, in this order: RSS at start and per idle session; added latency with
one session; CPU per 1000 relayed messages (GA passthrough, beta-bridged,
Gemini-translated); a session-count sweep for the p99 < 50 ms capacity (for
rtgate in all three modes); RSS of active sessions over time; sequential
session setups through the ``mock/`` provider. nginx (a plain WebSocket
proxy) and LiteLLM (from ``/tmp/litellm-venv`` if it exists) are measured the
same way when available; neither is a project dependency. Then the
``workers`` stage: saturation throughput of ``rtgate serve --workers N``
against one worker (see :func:`measure_workers`). The chart
(``latest.svg``, :mod:`bench.chart`) is drawn when matplotlib is installed
(``pip install -e '.[bench]'``, which ``make bench`` does).

    .venv/bin/python bench/run_all.py                 # full run, ~15 minutes
    .venv/bin/python bench/run_all.py --quick         # seconds; used by the smoke test
    .venv/bin/python bench/run_all.py --only workers  # one stage, merged into latest.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chart, loadgen
from bench.loadgen import Target

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
LITELLM_VENV = Path("/tmp/litellm-venv")
LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()  # LiteLLM refuses to start without one
PROXY_CORE = "0"
LOAD_CORE = "1"

# LiteLLM figures measured on this kind of machine (reference when it is not run here).
LITELLM_ANCHORS = {
    "cpu_s_per_1000_messages": 0.18,
    "sessions_per_core_p99_50ms": 50,
    "added_latency_ms_p50_1_session": 1.0,
    "rss_start_mb": 313,
    "rss_per_idle_session_kib": 119,
    "setups_per_s": 44,
    "cpu_ms_per_setup": 14.5,
}
TARGETS = {
    "cpu_s_per_1000_messages": 0.04,
    "beta_over_passthrough": 1.5,
    "gemini_over_passthrough": 3.0,
    "sessions_per_core_p99_50ms": 200,
    "added_latency_ms_p50_1_session": 0.3,
    "added_latency_ms_p99_1_session": 2.0,
    "rss_start_mb": 60,
    "rss_per_idle_session_kib": 30,
    "setups_per_s": 300,
    "cpu_ms_per_setup": 1.5,
    "workers_scaling_per_worker": 0.8,
}
STAGES = ("proxies", "workers")
P99_BUDGET_MS = 50.0
GENERATOR_LATE_MS = 10.0
"""A generator whose sends are this late (p99) measures itself, not the proxy."""


def _cores() -> int:
    return os.cpu_count() or 1


def _pin(cores: str) -> list[str]:
    """``taskset`` prefix for a core list such as ``"1"`` or ``"0,1"`` (nothing on one core)."""
    return ["taskset", "-c", cores] if shutil.which("taskset") and _cores() > 1 else []


def _core_list(cores: Sequence[int]) -> str:
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
    argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, terminated (then killed) on exit; its output goes to ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
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
def fake_upstream(workdir: Path, cores: str = LOAD_CORE) -> Iterator[tuple[int, int]]:
    """(port, pid) of a fake upstream pinned to ``cores`` (the load core by default)."""
    port = free_port()
    argv = [*_pin(cores), PYTHON, "-m", "bench.fake_upstream", "--port", str(port)]
    with process(argv, log=workdir / f"fake_upstream-{port}.log") as proc:
        wait_port(port, proc=proc)
        yield port, proc.pid


def gateway_config(upstream_port: int) -> str:
    return f"""\
model_list:
  - model_name: bench-openai
    litellm_params:
      model: openai/gpt-realtime
      api_base: ws://127.0.0.1:{upstream_port}/v1
      api_key: sk-bench-not-a-real-key
    model_info:
      mode: realtime
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


@contextlib.contextmanager
def rtgate(workdir: Path, upstream_port: int) -> Iterator[tuple[int, int]]:
    """(port, pid) of one rtgate worker pinned to the proxy core."""
    config = workdir / "rtgate.yaml"
    config.write_text(gateway_config(upstream_port))
    config.chmod(0o600)  # rtgate refuses plain-text secrets in a world-readable file
    port = free_port()
    argv = [
        *_pin(PROXY_CORE),
        PYTHON,
        "-m",
        "rtgate",
        "serve",
        "-c",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with process(argv, log=workdir / "rtgate.log") as proc:
        wait_port(port, proc=proc)
        yield port, proc.pid


def ensure_nginx() -> str | None:
    """nginx's path, installing Debian's package once if possible (bench only)."""
    path = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "nginx-light"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        path = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
    return path


@contextlib.contextmanager
def nginx(workdir: Path, upstream_port: int, binary: str) -> Iterator[tuple[int, list[int]]]:
    """(port, [master, worker] pids) of nginx as a plain WebSocket proxy, one worker."""
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""\
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/nginx-tmp;
  proxy_temp_path {workdir}/nginx-tmp;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{upstream_port};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      proxy_buffering off;
      tcp_nodelay on;
    }}
  }}
}}
""")
    (workdir / "nginx-tmp").mkdir(exist_ok=True)
    argv = [*_pin(PROXY_CORE), binary, "-c", str(conf), "-p", str(workdir)]
    with process(argv, log=workdir / "nginx.log") as proc:
        wait_port(port, proc=proc)
        yield port, [proc.pid, *_children(proc.pid)]


def _children(pid: int) -> list[int]:
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


@contextlib.contextmanager
def litellm(workdir: Path, upstream_port: int) -> Iterator[tuple[int, list[int]]]:
    """(port, pids) of a LiteLLM proxy from /tmp/litellm-venv, one worker, pinned."""
    config = workdir / "litellm.yaml"
    config.write_text(f"""\
model_list:
  - model_name: bench-openai
    litellm_params:
      model: openai/gpt-realtime
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-bench-not-a-real-key
""")
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    argv = [
        *_pin(PROXY_CORE),
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    with process(argv, log=workdir / "litellm.log", env=env) as proc:
        wait_port(port, timeout=120, proc=proc)
        yield port, [proc.pid, *_children(proc.pid)]


# -- the measurements ------------------------------------------------------------------


class Plan:
    """Durations and sizes of one run (``--quick`` shrinks everything)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.latency_seconds = 0.3 if quick else 15.0
        self.cpu_sessions = 2 if quick else 50
        self.cpu_seconds = 0.3 if quick else 10.0
        self.sweep = [2] if quick else [50, 100, 150, 200, 250, 300]
        self.sweep_seconds = 0.3 if quick else 8.0
        self.idle_sessions = 3 if quick else 200
        self.soak_sessions = 2 if quick else 100
        self.soak_seconds = 0.3 if quick else 30.0
        self.setups = 5 if quick else 400
        self.warmup = 0.1 if quick else 1.0
        self.worker_counts = [1, 2]
        # Sessions per worker: every worker count is compared at the same per-worker load.
        self.worker_sessions = [2] if quick else list(range(50, 501, 50))
        self.worker_seconds = 0.3 if quick else 8.0


def measure_proxy(
    name: str,
    url_for: Callable[[str], str],
    pids: Sequence[int],
    plan: Plan,
    direct: dict[str, Any],
    fake_pid: int,
    *,
    beta: bool = True,
    gemini: bool = False,
    mock_url: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    sweep_modes: bool = False,
) -> dict[str, Any]:
    """Every measurement for one proxy; ``direct`` holds the baseline results by key.

    ``sweep_modes``: sweep session counts beta-bridged and Gemini-translated too
    (where measured), not only GA passthrough.
    """
    out: dict[str, Any] = {"name": name}

    def target(*, beta: bool = False) -> Target:
        return Target(url_for("bench-openai"), beta=beta, headers=headers)

    time.sleep(0.2 if plan.quick else 1.0)
    out["rss_start_mb"] = round(loadgen.rss_bytes(pids) / 2**20, 1)
    out["idle"] = loadgen.idle_memory(target(), plan.idle_sessions, pids)
    out["rss_per_idle_session_kib"] = out["idle"]["rss_per_idle_session_kib"]
    one = loadgen.run_load(
        target(),
        1,
        plan.latency_seconds,
        warmup=plan.warmup,
        pids=pids,
        other_pids=[fake_pid],
    )
    out["one_session"] = one
    out["added_latency_ms_p50_1_session"] = _minus(
        one["latency_ms_p50"], direct["one"]["latency_ms_p50"]
    )
    out["added_latency_ms_p99_1_session"] = _minus(
        one["latency_ms_p99"], direct["one"]["latency_ms_p99"]
    )
    ga = loadgen.run_load(
        target(),
        plan.cpu_sessions,
        plan.cpu_seconds,
        warmup=plan.warmup,
        pids=pids,
        other_pids=[fake_pid],
    )
    out["passthrough"] = ga
    out["cpu_s_per_1000_messages"] = ga.get("cpu_s_per_1000_messages")
    if beta:
        bridged = loadgen.run_load(
            target(beta=True),
            plan.cpu_sessions,
            plan.cpu_seconds,
            warmup=plan.warmup,
            pids=pids,
            other_pids=[fake_pid],
        )
        out["beta"] = bridged
        out["beta_cpu_s_per_1000_messages"] = bridged.get("cpu_s_per_1000_messages")
        if ga.get("cpu_s_per_1000_messages") and bridged.get("cpu_s_per_1000_messages"):
            out["beta_over_passthrough"] = round(
                bridged["cpu_s_per_1000_messages"] / ga["cpu_s_per_1000_messages"], 2
            )
    if gemini:
        # The same audio stream, translated to Gemini Live and back (bench.fake_upstream
        # answers realtimeInput.audio with a modelTurn carrying the same audio).
        translated = loadgen.run_load(
            Target(url_for("bench-gemini"), headers=headers, audio_probes=True),
            plan.cpu_sessions,
            plan.cpu_seconds,
            warmup=plan.warmup,
            pids=pids,
            other_pids=[fake_pid],
        )
        out["gemini"] = translated
        out["gemini_cpu_s_per_1000_messages"] = translated.get("cpu_s_per_1000_messages")
        if ga.get("cpu_s_per_1000_messages") and translated.get("cpu_s_per_1000_messages"):
            out["gemini_over_passthrough"] = round(
                translated["cpu_s_per_1000_messages"] / ga["cpu_s_per_1000_messages"], 2
            )
    out["sweep"], out["sessions_per_core_p99_50ms"] = sweep_sessions(
        target(), pids, plan, direct, fake_pid
    )
    out["sweep_max_tried"] = plan.sweep[-1]
    if sweep_modes and beta:
        out["beta_sweep"], out["beta_sessions_per_core_p99_50ms"] = sweep_sessions(
            target(beta=True), pids, plan, direct, fake_pid
        )
    if sweep_modes and gemini:
        # Added latency against the direct GA floor: the generator speaks only the
        # OpenAI protocol, and the fake answers both dialects at the same cost.
        gemini_target = Target(url_for("bench-gemini"), headers=headers, audio_probes=True)
        out["gemini_sweep"], out["gemini_sessions_per_core_p99_50ms"] = sweep_sessions(
            gemini_target, pids, plan, direct, fake_pid
        )
    soak = loadgen.run_load(
        target(),
        plan.soak_sessions,
        plan.soak_seconds,
        warmup=plan.warmup,
        pids=pids,
        other_pids=[fake_pid],
        rss_every=max(0.25, plan.soak_seconds / 6),
    )
    out["soak"] = soak
    series = soak.get("rss_mb_series") or []
    if len(series) >= 2:
        out["active_rss_growth_mb"] = round(series[-1][1] - series[0][1], 2)
    setup_target = Target(mock_url) if mock_url else target()
    out["setup"] = loadgen.setup_rate(setup_target, plan.setups, pids)
    out["setup_via"] = "mock/ provider" if mock_url else "fake upstream"
    out["setups_per_s"] = out["setup"]["setups_per_s"]
    out["cpu_ms_per_setup"] = out["setup"]["cpu_ms_per_setup"]
    return out


def sweep_sessions(
    target: Target,
    pids: Sequence[int],
    plan: Plan,
    direct: dict[str, Any],
    fake_pid: int,
) -> tuple[list[dict[str, Any]], int]:
    """Load rows over ``plan.sweep`` until added p99 misses 50 ms; (rows, capacity)."""
    sweep: list[dict[str, Any]] = []
    capacity = 0
    for n in plan.sweep:
        # Best of two when the first try misses: the machine is shared, and one
        # burst from another process must not decide the capacity figure.
        r: dict[str, Any] = {}
        for attempt in (1, 2):
            try:
                r = loadgen.run_load(
                    target,
                    n,
                    plan.sweep_seconds,
                    warmup=plan.warmup,
                    pids=pids,
                    other_pids=[fake_pid],
                )
            except (ConnectionError, OSError) as exc:
                r = {"sessions": n, "error": str(exc)}
                break
            base = direct["sweep"].get(n, {})
            r["added_latency_ms_p50"] = _minus(r["latency_ms_p50"], base.get("latency_ms_p50"))
            r["added_latency_ms_p99"] = _minus(r["latency_ms_p99"], base.get("latency_ms_p99"))
            r["direct_latency_ms_p99"] = base.get("latency_ms_p99")
            r["direct_send_lateness_ms_p99"] = base.get("send_lateness_ms_p99")
            r["attempt"] = attempt
            r["loadavg"] = os.getloadavg()[0]
            if r["added_latency_ms_p99"] is not None and r["added_latency_ms_p99"] < P99_BUDGET_MS:
                break
        sweep.append(r)
        if "error" in r:
            break
        if r["added_latency_ms_p99"] is not None and r["added_latency_ms_p99"] < P99_BUDGET_MS:
            capacity = n
        else:
            break
    return sweep, capacity


def measure_direct(fake_port: int, fake_pid: int, plan: Plan) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{fake_port}/v1/realtime?model=bench-openai"
    direct: dict[str, Any] = {"name": "direct (no proxy)"}
    direct["one"] = loadgen.run_load(
        Target(url), 1, plan.latency_seconds, warmup=plan.warmup, pids=[fake_pid]
    )
    direct["sweep"] = {}
    for n in plan.sweep:
        direct["sweep"][n] = loadgen.run_load(
            Target(url), n, plan.sweep_seconds, warmup=plan.warmup, pids=[fake_pid]
        )
    direct["setup"] = loadgen.setup_rate(Target(url), plan.setups, [fake_pid])
    return direct


def _minus(a: Any, b: Any) -> float | None:
    if a is None or b is None:
        return None
    return round(max(0.0, float(a) - float(b)), 3)


# -- --workers N: throughput on all cores ----------------------------------------------

DEDICATED = "dedicated"
CO_LOCATED = "co-located"


def worker_layouts(n: int, cores: int) -> list[tuple[str, list[int], list[int]]]:
    """(layout, worker cores, load cores) to measure ``n`` workers in.

    ``dedicated`` (needs 2 x n cores): workers on cores ``0..n-1``, the load
    (one generator and one fake upstream per worker) on cores ``n..2n-1``, so
    the saturation rate is the workers'. ``co-located`` (needs n cores): core
    *i* runs worker *i*, generator *i* and fake upstream *i*, which a 2-vCPU
    machine can do for n = 2 where it cannot keep the load apart.
    """
    layouts: list[tuple[str, list[int], list[int]]] = []
    if 2 * n <= cores:
        layouts.append((DEDICATED, list(range(n)), list(range(n, 2 * n))))
    if n <= cores:
        layouts.append((CO_LOCATED, list(range(n)), list(range(n))))
    return layouts


def workers_config(upstream_ports: Sequence[int]) -> str:
    """One ``bench-openai`` deployment per fake upstream (the pool spreads sessions over them)."""
    deployments = "".join(
        f"""\
  - model_name: bench-openai
    litellm_params:
      model: openai/gpt-realtime
      api_base: ws://127.0.0.1:{port}/v1
      api_key: sk-bench-not-a-real-key
    model_info:
      mode: realtime
"""
        for port in upstream_ports
    )
    return f"model_list:\n{deployments}rtgate:\n  host: 127.0.0.1\n  log_level: warning\n"


def _pin_threads(pid: int, core: int) -> None:
    """Pin every thread of ``pid`` to ``core`` (``sched_setaffinity`` takes one thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {core})


@contextlib.contextmanager
def rtgate_workers(
    workdir: Path, upstream_ports: Sequence[int], count: int, cores: Sequence[int]
) -> Iterator[tuple[int, list[int], list[int]]]:
    """(port, worker pids, supervisor pids) of ``rtgate serve --workers count``.

    The supervisor starts on ``cores``; worker *i* is then pinned to
    ``cores[i]``, as one would on a production host. With one worker there is
    no supervisor (``--workers 1`` serves in-process).
    """
    config = workdir / f"rtgate-workers-{count}.yaml"
    config.write_text(workers_config(upstream_ports))
    config.chmod(0o600)
    port = free_port()
    argv = [
        *_pin(_core_list(cores)),
        PYTHON,
        "-m",
        "rtgate",
        "serve",
        "-c",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(count),
    ]
    with process(argv, log=workdir / f"rtgate-workers-{count}.log") as proc:
        wait_port(port, proc=proc)
        if count == 1:
            workers, supervisor = [proc.pid], []
        else:
            deadline = time.monotonic() + 30
            while len(_children(proc.pid)) < count:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"--workers {count}: workers did not start")
                time.sleep(0.05)
            workers, supervisor = _children(proc.pid), [proc.pid]
        if _cores() > 1:
            for i, pid in enumerate(workers):
                _pin_threads(pid, cores[i % len(cores)])
        yield port, workers, supervisor


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


def _sleep_until(monotonic_ns: int) -> None:
    delay = (monotonic_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def synced_load(
    url: str,
    sessions_each: Sequence[int],
    generator_cores: Sequence[int],
    plan: Plan,
    workdir: Path,
    *,
    port: int,
    workers: Sequence[int],
    supervisor: Sequence[int],
    upstreams: Sequence[int],
    worker_cores: Sequence[int],
    load_cores: Sequence[int],
) -> dict[str, Any]:
    """One load run from several generator processes started together; merged report.

    Each generator (``bench.loadgen --sync --samples``) is pinned to its core,
    opens its sessions, says ``ready``; all then start at one monotonic instant.
    This process measures each worker's CPU over the same window and counts the
    sessions each worker holds halfway through it.
    """
    seconds, warmup = plan.worker_seconds, plan.warmup
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, (n, core) in enumerate(zip(sessions_each, generator_cores, strict=True)):
            argv = [
                *_pin(str(core)),
                PYTHON,
                "-m",
                "bench.loadgen",
                "--url",
                url,
                "--sessions",
                str(n),
                "--seconds",
                str(seconds),
                "--warmup",
                str(warmup),
                "--sync",
                "--samples",
            ]
            with open(workdir / f"loadgen-{i}.log", "ab") as log:
                procs.append(
                    subprocess.Popen(
                        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT
                    )
                )
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                proc.wait(10)
                raise ConnectionError(
                    f"a generator failed to open its sessions (exit {proc.returncode}; "
                    f"see {workdir}/loadgen-*.log)"
                )
        start = time.monotonic_ns() + 100_000_000
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"%d\n" % start)
            proc.stdin.flush()
        window_from = start + 2_000_000 + int(warmup * 1e9)
        window_to = window_from + int(seconds * 1e9)
        _sleep_until(window_from)
        cpu0 = [loadgen.cpu_seconds([pid]) for pid in workers]
        sup0 = loadgen.cpu_seconds(supervisor) if supervisor else 0.0
        up0 = loadgen.cpu_seconds(upstreams)
        ticks0 = core_ticks(worker_cores), core_ticks(load_cores)
        _sleep_until((window_from + window_to) // 2)
        held = [established_sessions(pid, port) for pid in workers]
        _sleep_until(window_to)
        cpu1 = [loadgen.cpu_seconds([pid]) for pid in workers]
        sup1 = loadgen.cpu_seconds(supervisor) if supervisor else 0.0
        up1 = loadgen.cpu_seconds(upstreams)
        ticks1 = core_ticks(worker_cores), core_ticks(load_cores)
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise ConnectionError(
                    f"a generator failed under load (see {workdir}/loadgen-*.log)"
                )
            reports.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    wall = (window_to - window_from) / 1e9
    samples = [v for r in reports for v in r["latency_samples_ms"]]
    relayed = sum(r["relayed_messages_in_window"] for r in reports)
    total_sessions = sum(sessions_each)
    cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    # Every session relays the same message rate, so a worker relays its share of sessions.
    per_worker_cpu_1000 = [
        round(1000 * c / (relayed * h / total_sessions), 4) if relayed and h else None
        for c, h in zip(cpu, held, strict=True)
    ]
    busiest = max(cpu) / wall if wall else 0.0
    messages_per_s = round(relayed / wall) if wall else 0
    mean_held = total_sessions / len(workers)
    return {
        "sessions": total_sessions,
        "generators": len(procs),
        "seconds": round(wall, 2),
        "messages_per_s": messages_per_s,
        "probes": len(samples),
        "probes_unanswered": sum(r["probes_unanswered"] for r in reports),
        "error_events": sum(r["error_events"] for r in reports),
        "latency_ms_p50": _round(loadgen.percentile(samples, 50)),
        "latency_ms_p99": _round(loadgen.percentile(samples, 99)),
        "latency_ms_max": _round(max(samples) if samples else None),
        "worker_sessions": held,
        "session_spread_max_over_mean": round(max(held) / mean_held, 3) if mean_held else None,
        "worker_cpu_fraction": [round(c / wall, 3) for c in cpu],
        "worker_cpu_s_per_1000_messages": per_worker_cpu_1000,
        "cpu_s_per_1000_messages": round(1000 * (sum(cpu) + sup1 - sup0) / relayed, 4)
        if relayed
        else None,
        "supervisor_cpu_fraction": round((sup1 - sup0) / wall, 4) if supervisor else None,
        "busiest_worker_cpu_fraction": round(busiest, 3),
        "projected_messages_per_s": round(messages_per_s / busiest) if busiest else None,
        "upstream_cpu_fraction": round((up1 - up0) / wall, 3),
        "generator_cpu_fraction": [r["loadgen_cpu_fraction"] for r in reports],
        "generator_send_lateness_ms_p99": max(r["send_lateness_ms_p99"] or 0 for r in reports),
        "worker_cores_busy_fraction": _busy(ticks0[0], ticks1[0]),
        "load_cores_busy_fraction": _busy(ticks0[1], ticks1[1]),
    }


def _busy(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _limit(row: dict[str, Any], layout: str) -> str | None:
    """Why a ramp stops at this row (None: it may go on)."""
    late = row["generator_send_lateness_ms_p99"] > GENERATOR_LATE_MS or any(
        (f or 0) > 0.9 for f in row["generator_cpu_fraction"]
    )
    over = row["latency_ms_p99"] is None or row["latency_ms_p99"] >= P99_BUDGET_MS
    if not over:
        return "generator limit (its sends ran late)" if late else None
    if row["busiest_worker_cpu_fraction"] >= 0.9:
        return "p99 >= 50 ms: a worker's core is full"
    if _full(row["load_cores_busy_fraction"]) or late:
        if layout == CO_LOCATED:
            return "p99 >= 50 ms: the cores are full (workers + load)"
        return "p99 >= 50 ms: generator limit (the load cores are full)"
    return "p99 >= 50 ms"


def _full(busy: float | None) -> bool:
    return busy is not None and busy >= 0.9


def measure_workers(plan: Plan, workdir: Path) -> dict[str, Any]:
    """Saturation throughput of ``rtgate serve --workers N``, and how it scales with N.

    For each N and layout (:func:`worker_layouts`): N fake upstreams (one
    deployment each), ``rtgate serve --workers N`` with worker *i* pinned to
    core *i*, N generator processes of S sessions each started together; S
    ramps up until the round-trip p99 reaches 50 ms (a miss is retried once)
    or the generators run late. Saturation = the highest message rate under
    50 ms. The round trip is absolute (the direct floor is under 1 ms, so this
    is stricter than "added").

    Scaling, N vs 1: with dedicated layouts for both, the ratio of measured
    saturation rates. Where the load must share the workers' cores (fewer than
    2 x N cores), that rate is the machine's, so the workers are compared by
    CPU instead, co-located against co-located at the same sessions per worker:
    efficiency = one worker's CPU fraction / the busiest of N workers' CPU
    fraction (1.0: N workers each carry S sessions at one worker's cost and the
    kernel spread the sessions evenly), and projected N-worker saturation =
    N x efficiency x one worker's dedicated saturation.
    """
    cores = _cores()
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cores} cores, {os.uname().machine}, Python {sys.version.split()[0]}",
        "runs": [],
        "summary": [],
    }
    for n in plan.worker_counts:
        layouts = worker_layouts(n, cores)
        if not layouts:
            out["summary"].append({"workers": n, "layout": None, "limit": f"needs {n} cores"})
        for layout, proxy_cores, load_cores in layouts:
            out["runs"] += _ramp(plan, workdir, n, layout, proxy_cores, load_cores)
            mine = [r for r in out["runs"] if r["workers"] == n and r["layout"] == layout]
            passed = [r for r in mine if "error" not in r and r["latency_ms_p99"] < P99_BUDGET_MS]
            best = max(passed, key=lambda r: r["messages_per_s"], default=None)
            out["summary"].append(
                {
                    "workers": n,
                    "layout": layout,
                    "proxy_cores": proxy_cores,
                    "load_cores": load_cores,
                    "saturation_messages_per_s": best["messages_per_s"] if best else None,
                    "saturation_sessions": best["sessions"] if best else None,
                    "limit": mine[-1].get("limit") or "not saturated at the largest load tried",
                    "cpu_s_per_1000_messages_per_worker": best["worker_cpu_s_per_1000_messages"]
                    if best
                    else None,
                }
            )
    out["scaling"] = scaling(out["runs"], out["summary"], plan.worker_counts)
    return out


def _ramp(
    plan: Plan,
    workdir: Path,
    n: int,
    layout: str,
    proxy_cores: list[int],
    load_cores: list[int],
) -> list[dict[str, Any]]:
    """Rows of one ramp: ``n`` workers in ``layout``, sessions per worker rising."""
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if _cores() > 1:  # this process only reads /proc during a run; it counts as load
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, set(load_cores))
            stack.callback(os.sched_setaffinity, 0, before)
        fakes = [
            stack.enter_context(fake_upstream(workdir, cores=str(load_cores[i % len(load_cores)])))
            for i in range(n)
        ]
        port, workers, supervisor = stack.enter_context(
            rtgate_workers(workdir, [p for p, _ in fakes], n, proxy_cores)
        )
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=bench-openai"
        for per_worker in plan.worker_sessions:
            row: dict[str, Any] = {}
            stop: str | None = None
            for attempt in (1, 2):
                try:
                    row = synced_load(
                        url,
                        [per_worker] * n,
                        [load_cores[i % len(load_cores)] for i in range(n)],
                        plan,
                        workdir,
                        port=port,
                        workers=workers,
                        supervisor=supervisor,
                        upstreams=[pid for _, pid in fakes],
                        worker_cores=proxy_cores,
                        load_cores=load_cores,
                    )
                except (ConnectionError, OSError, ValueError) as exc:
                    row, stop = {"error": str(exc)}, f"error: {exc}"
                    break
                row["attempt"] = attempt
                row["loadavg"] = os.getloadavg()[0]  # others' work on this machine shows here
                stop = _limit(row, layout)
                if stop is None or not stop.startswith("p99"):
                    break
            row.update(
                workers=n,
                layout=layout,
                sessions_per_worker=per_worker,
                proxy_cores=proxy_cores,
                load_cores=load_cores,
                limit=stop,
            )
            rows.append(row)
            if stop is not None:
                break
    return rows


def scaling(
    runs: Sequence[dict[str, Any]],
    summary: Sequence[dict[str, Any]],
    counts: Sequence[int],
) -> list[dict[str, Any]]:
    """N workers against one: measured ratio where both had dedicated cores, else from CPU."""

    def unsaturated(n: int, layout: str) -> dict[int, dict[str, Any]]:
        """Rows under 50 ms whose cores had room (a full core distorts CPU per message)."""
        return {
            r["sessions_per_worker"]: r
            for r in runs
            if r["workers"] == n
            and r["layout"] == layout
            and "error" not in r
            and r["latency_ms_p99"] < P99_BUDGET_MS
            and r["busiest_worker_cpu_fraction"] < 0.9
            and not _full(r["worker_cores_busy_fraction"])
            and not _full(r["load_cores_busy_fraction"])
        }

    def saturation(n: int, layout: str) -> int | None:
        for s in summary:
            if s["workers"] == n and s.get("layout") == layout:
                value: int | None = s["saturation_messages_per_s"]
                return value
        return None

    one_dedicated = saturation(1, DEDICATED)
    one_co = unsaturated(1, CO_LOCATED)
    rows = []
    for n in counts:
        if n == 1:
            continue
        row: dict[str, Any] = {
            "workers": n,
            "target_ratio": round(TARGETS["workers_scaling_per_worker"] * n, 2),
        }
        many_dedicated = saturation(n, DEDICATED)
        if one_dedicated and many_dedicated:
            row["measured_ratio"] = round(many_dedicated / one_dedicated, 2)
        one_co_sat, many_co_sat = saturation(1, CO_LOCATED), saturation(n, CO_LOCATED)
        if one_co_sat and many_co_sat:
            # Workers *and* load on n cores against both on one core: the whole system.
            row["measured_co_located_ratio"] = round(many_co_sat / one_co_sat, 2)
        many_co = unsaturated(n, CO_LOCATED)
        per_load = {
            s: round(
                one_co[s]["busiest_worker_cpu_fraction"]
                / many_co[s]["busiest_worker_cpu_fraction"],
                2,
            )
            for s in sorted(set(one_co) & set(many_co))
            if many_co[s]["busiest_worker_cpu_fraction"]
        }
        if per_load:
            row["efficiency_by_sessions_per_worker"] = per_load
            row["efficiency"] = min(per_load.values())  # the least favourable load
            if one_dedicated:
                row["projected_messages_per_s"] = round(n * row["efficiency"] * one_dedicated)
                row["projected_ratio"] = round(n * row["efficiency"], 2)
        rows.append(row)
    return rows


# -- report ----------------------------------------------------------------------------

ROWS = [
    ("CPU-s per 1000 relayed messages (GA passthrough)", "cpu_s_per_1000_messages", "<= 0.04"),
    ("CPU-s per 1000 messages, beta-bridged", "beta_cpu_s_per_1000_messages", ""),
    ("beta-bridged / passthrough CPU", "beta_over_passthrough", "<= 1.5"),
    ("CPU-s per 1000 messages, Gemini-translated", "gemini_cpu_s_per_1000_messages", ""),
    ("Gemini-translated / passthrough CPU", "gemini_over_passthrough", "<= 3"),
    ("sessions per core at added p99 < 50 ms", "sessions_per_core_p99_50ms", ">= 200"),
    ("the same, beta-bridged", "beta_sessions_per_core_p99_50ms", ""),
    ("the same, Gemini-translated", "gemini_sessions_per_core_p99_50ms", ""),
    ("added latency p50, 1 session (ms)", "added_latency_ms_p50_1_session", "<= 0.3"),
    ("added latency p99, 1 session (ms)", "added_latency_ms_p99_1_session", "<= 2"),
    ("RSS at start (MB)", "rss_start_mb", "<= 60"),
    ("RSS per idle session (KiB)", "rss_per_idle_session_kib", "<= 30"),
    ("RSS growth, active sessions over the soak (MB)", "active_rss_growth_mb", "flat"),
    ("session setups/s, sequential", "setups_per_s", ">= 300"),
    ("CPU ms per setup", "cpu_ms_per_setup", "<= 1.5"),
]


CAPACITY_KEYS = {
    "sessions_per_core_p99_50ms": "sweep",
    "beta_sessions_per_core_p99_50ms": "beta_sweep",
    "gemini_sessions_per_core_p99_50ms": "gemini_sweep",
}


def markdown(results: dict[str, Any]) -> str:
    proxies = results.get("proxies") or []
    lines: list[str] = []
    if proxies:
        lines += _proxies_markdown(results, proxies)
    if results.get("workers"):
        lines += _workers_markdown(results["workers"])
    return "\n".join(lines) + "\n"


def _proxies_markdown(results: dict[str, Any], proxies: list[dict[str, Any]]) -> list[str]:
    names = [p["name"] for p in proxies]
    lines = [
        f"Measured {results['date']} on {results['machine']}; proxy pinned to core {PROXY_CORE}, "
        f"load generator and fake upstream on core {LOAD_CORE}.",
        "",
        "| metric | target | " + " | ".join(names) + " | LiteLLM (anchor) |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for label, key, target in ROWS:
        cells = []
        for p in proxies:
            value = p.get(key)
            sweep = p.get(CAPACITY_KEYS.get(key, ""), [])
            if (
                key in CAPACITY_KEYS
                and value is not None
                and value == p.get("sweep_max_tried")
                and value == (sweep[-1].get("sessions") if sweep else None)
            ):
                cells.append(f">= {value} (generator limit)")
            else:
                cells.append("n/a" if value is None else str(value))
        anchor = LITELLM_ANCHORS.get(key)
        lines.append(
            f"| {label} | {target} | "
            + " | ".join(cells)
            + f" | {anchor if anchor is not None else ''} |"
        )
    lines += [
        "",
        "Session-count sweep (added latency vs. the same load sent directly to the fake upstream):",
        "",
    ]
    lines.append(
        "| proxy | sessions | msgs/s | proxy CPU | CPU-s/1000 msgs | added p50 ms | added p99 ms | direct p99 ms | generator send lateness p99 ms |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for p in proxies:
        for key, mode in chart.MODES:
            name = p["name"] if key == "sweep" else f"{p['name']}, {mode}"
            for r in p.get(key, []):
                if "error" in r:
                    lines.append(f"| {name} | {r['sessions']} | error: {r['error']} | | | | | | |")
                    continue
                lines.append(
                    f"| {name} | {r['sessions']} | {r['messages_per_s']} | {r.get('cpu_fraction')} | "
                    f"{r.get('cpu_s_per_1000_messages')} | "
                    f"{r['added_latency_ms_p50']} | {r['added_latency_ms_p99']} | {r['direct_latency_ms_p99']} | "
                    f"{r['send_lateness_ms_p99']} |"
                )
    return lines


def _workers_markdown(w: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"### `rtgate serve --workers N`: throughput on all cores (measured {w['date']}, {w['machine']})",
        "",
        "Worker *i* pinned to core *i*; one generator process and one fake upstream per worker, "
        "on the load cores. *dedicated*: the load has cores of its own; *co-located*: each "
        "core runs a worker, a generator and a fake upstream. Round trip = absolute p99 (the "
        "direct floor is under 1 ms). CPU-s per 1000 messages per worker assumes every session "
        "relays the same rate (they do: same audio stream).",
        "",
        "| workers | layout | worker / load cores | sessions (per worker) | msgs/s | round trip p99 ms "
        "| CPU per worker | CPU-s/1000 msgs per worker | sessions held per worker "
        "| generator lateness p99 ms | worker / load cores busy | stop |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in w.get("runs", []):
        head = (
            f"| {r['workers']} | {r['layout']} "
            f"| {_core_list(r['proxy_cores'])} / {_core_list(r['load_cores'])} "
        )
        if "error" in r:
            lines.append(f"{head}| {r['sessions_per_worker']} | error: {r['error']} |||||||")
            continue
        lines.append(
            f"{head}| {r['sessions']} ({r['sessions_per_worker']}) "
            f"| {r['messages_per_s']} | {r['latency_ms_p99']} "
            f"| {_slash(r['worker_cpu_fraction'])} | {_slash(r['worker_cpu_s_per_1000_messages'])} "
            f"| {_slash(r['worker_sessions'])} | {r['generator_send_lateness_ms_p99']} "
            f"| {r['worker_cores_busy_fraction']} / {r['load_cores_busy_fraction']} "
            f"| {r.get('limit') or ''} |"
        )
    lines += [
        "",
        "| workers | layout | saturation msgs/s (p99 < 50 ms) | at sessions | what stopped the ramp "
        "| CPU-s/1000 msgs per worker there |",
        "|---|---|---|---|---|---|",
    ]
    for s in w.get("summary", []):
        lines.append(
            f"| {s['workers']} | {s.get('layout') or 'n/a'} "
            f"| {s.get('saturation_messages_per_s')} | {s.get('saturation_sessions')} "
            f"| {s['limit']} | {_slash(s.get('cpu_s_per_1000_messages_per_worker') or [])} |"
        )
    for sc in w.get("scaling", []):
        n = sc["workers"]
        parts = [f"N = {n} vs 1 (target: >= {sc['target_ratio']} x one worker's throughput):"]
        if "measured_ratio" in sc:
            parts.append(f"measured with dedicated cores {sc['measured_ratio']} x.")
        else:
            parts.append(
                f"no dedicated-core measurement here ({2 * n} cores needed to keep the load apart)."
            )
        if "measured_co_located_ratio" in sc:
            parts.append(
                f"Measured co-located (workers and load on {n} cores vs on 1): "
                f"{sc['measured_co_located_ratio']} x."
            )
        if "efficiency" in sc:
            by_load = ", ".join(
                f"{e} at {s}" for s, e in sc["efficiency_by_sessions_per_worker"].items()
            )
            parts.append(
                f"Per-worker CPU efficiency, co-located at equal sessions per worker with "
                f"cores not full: {sc['efficiency']} ({by_load} sessions per worker)"
            )
            if "projected_ratio" in sc:
                parts[-1] += (
                    f", so projected {sc['projected_ratio']} x = "
                    f"{sc['projected_messages_per_s']} msgs/s on {n} dedicated cores."
                )
            else:
                parts[-1] += "."
        lines += ["", " ".join(parts)]
    return lines


def _slash(values: Sequence[Any]) -> str:
    return " / ".join("n/a" if v is None else str(v) for v in values)


def run(
    plan: Plan,
    out_dir: Path,
    *,
    with_nginx: bool,
    with_litellm: bool,
    stages: Sequence[str] = STAGES,
) -> dict[str, Any]:
    """Run ``stages``; write ``latest`` (``quick``) ``.json``, ``.md`` and ``.svg`` in ``out_dir``.

    A run of some stages only keeps the other stages' results from the existing
    JSON file (each stage records its own date).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="rtgate-bench-"))
    name = "quick" if plan.quick else "latest"
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{_cores()} cores, {os.uname().machine}, Python {sys.version.split()[0]}",
        "quick": plan.quick,
        "proxies": [],
        "litellm_anchors": LITELLM_ANCHORS,
        "targets": TARGETS,
    }
    previous = out_dir / f"{name}.json"
    if set(stages) != set(STAGES) and previous.exists():
        results = json.loads(previous.read_text())
        results["targets"] = TARGETS
    if "proxies" in stages:
        results.update(
            date=time.strftime("%Y-%m-%d %H:%M"), proxies=[], direct={}, quick=plan.quick
        )
        results.pop("litellm_error", None)
        _measure_proxies(results, plan, workdir, with_nginx=with_nginx, with_litellm=with_litellm)
    if "workers" in stages:
        results["workers"] = measure_workers(plan, workdir)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(results))
    write_chart(results, out_dir / f"{name}.svg")
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def write_chart(results: dict[str, Any], path: Path) -> Path | None:
    """The chart (:mod:`bench.chart`), or a note on stderr when matplotlib is missing."""
    try:
        return chart.render(results, path)
    except ImportError:
        sys.stderr.write(
            "no chart: matplotlib is not installed (pip install -e '.[bench]', or make bench)\n"
        )
        return None


def _measure_proxies(
    results: dict[str, Any], plan: Plan, workdir: Path, *, with_nginx: bool, with_litellm: bool
) -> None:
    with fake_upstream(workdir) as (fake_port, fake_pid):
        direct = measure_direct(fake_port, fake_pid, plan)
        results["direct"] = direct
        with rtgate(workdir, fake_port) as (port, pid):
            base = f"ws://127.0.0.1:{port}/v1/realtime?model="
            results["proxies"].append(
                measure_proxy(
                    "rtgate",
                    lambda m: base + m,
                    [pid],
                    plan,
                    direct,
                    fake_pid,
                    gemini=True,
                    mock_url=base + "mock-realtime",
                    sweep_modes=True,
                )
            )
        binary = ensure_nginx() if with_nginx else None
        if binary is not None:
            with nginx(workdir, fake_port, binary) as (port, pids):
                base = f"ws://127.0.0.1:{port}/v1/realtime?model="
                results["proxies"].append(
                    measure_proxy(
                        "nginx", lambda m: base + m, pids, plan, direct, fake_pid, beta=False
                    )
                )
        if with_litellm and (LITELLM_VENV / "bin" / "litellm").exists():
            try:
                with litellm(workdir, fake_port) as (port, pids):
                    base = f"ws://127.0.0.1:{port}/v1/realtime?model="
                    auth = [("Authorization", f"Bearer {LITELLM_KEY}")]
                    results["proxies"].append(
                        measure_proxy(
                            "LiteLLM",
                            lambda m: base + m,
                            pids,
                            plan,
                            direct,
                            fake_pid,
                            headers=auth,
                        )
                    )
            except (RuntimeError, TimeoutError, ConnectionError, OSError) as exc:
                results["litellm_error"] = str(exc)


def standalone(
    sessions: int, seconds: float, *, beta: bool = False, gemini: bool = False
) -> dict[str, Any]:
    """One load run through a fresh pinned rtgate (what ``make bench`` runs)."""
    workdir = Path(tempfile.mkdtemp(prefix="rtgate-bench-"))
    try:
        with (
            fake_upstream(workdir) as (fake_port, fake_pid),
            rtgate(workdir, fake_port) as (port, pid),
        ):
            model = "bench-gemini" if gemini else "bench-openai"
            url = f"ws://127.0.0.1:{port}/v1/realtime?model={model}"
            return loadgen.run_load(
                Target(url, beta=beta, audio_probes=gemini),
                sessions,
                seconds,
                pids=[pid],
                other_pids=[fake_pid],
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="rtgate benchmarks, side by side")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--only",
        help=f"comma-separated stages out of {','.join(STAGES)}; the others' results are kept",
    )
    parser.add_argument(
        "--worker-counts", help="workers stage: worker counts to compare (default 1,2)"
    )
    parser.add_argument(
        "--worker-sessions", help="workers stage: sessions per worker to ramp through"
    )
    args = parser.parse_args(argv)
    stages = args.only.split(",") if args.only else list(STAGES)
    if unknown := set(stages) - set(STAGES):
        parser.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    plan = Plan(args.quick)
    if args.worker_counts:
        plan.worker_counts = sorted({int(n) for n in args.worker_counts.split(",")} | {1})
    if args.worker_sessions:
        plan.worker_sessions = [int(n) for n in args.worker_sessions.split(",")]
    # The generator (this process) shares the load core with the fake upstream.
    if _cores() > 1:
        os.sched_setaffinity(0, {int(LOAD_CORE)})
    results = run(
        plan,
        Path(args.out),
        with_nginx=not args.no_nginx,
        with_litellm=not args.no_litellm,
        stages=stages,
    )
    sys.stdout.write(markdown(results))


if __name__ == "__main__":
    main()
