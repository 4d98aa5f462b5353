"""Run every rtgate benchmark side by side in one go; write JSON and a markdown table.

Layout on a 2-core machine: the proxy under test (rtgate, nginx, LiteLLM) is
pinned to core 0, the load generator and the fake upstream share core 1, so
what is measured on core 0 is the proxy alone. Every proxy relays to the same
:mod:`bench.fake_upstream`; "direct" runs connect the generator to the fake
itself, and added latency is the proxied figure minus the direct one.

Measured, in this order: RSS at start and per idle session; added latency with
one session; CPU per 1000 relayed messages (GA passthrough, beta-bridged); a
session-count sweep for the p99 < 50 ms capacity; RSS of active sessions over
time; sequential session setups through the ``mock/`` provider. nginx (a plain
WebSocket proxy) and LiteLLM (from ``/tmp/litellm-venv`` if it exists) are
measured the same way when available; neither is a project dependency.

    .venv/bin/python bench/run_all.py            # full run, ~4 minutes
    .venv/bin/python bench/run_all.py --quick    # seconds; used by the smoke test
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

from bench import loadgen
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
}


def _cores() -> int:
    return os.cpu_count() or 1


def _pin(core: str) -> list[str]:
    return ["taskset", "-c", core] if shutil.which("taskset") and _cores() > 1 else []


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
def fake_upstream(workdir: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of a fake upstream pinned to the load core."""
    port = free_port()
    argv = [*_pin(LOAD_CORE), PYTHON, "-m", "bench.fake_upstream", "--port", str(port)]
    with process(argv, log=workdir / "fake_upstream.log") as proc:
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
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in out.split()]


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
        self.latency_seconds = 0.5 if quick else 15.0
        self.cpu_sessions = 2 if quick else 50
        self.cpu_seconds = 0.5 if quick else 10.0
        self.sweep = [2] if quick else [100, 150, 200, 250, 300]
        self.sweep_seconds = 0.5 if quick else 8.0
        self.idle_sessions = 3 if quick else 200
        self.soak_sessions = 2 if quick else 100
        self.soak_seconds = 0.5 if quick else 30.0
        self.setups = 5 if quick else 400
        self.warmup = 0.1 if quick else 1.0


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
) -> dict[str, Any]:
    """Every measurement for one proxy; ``direct`` holds the baseline results by key."""
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
    sweep: list[dict[str, Any]] = []
    capacity = 0
    for n in plan.sweep:
        # Best of two when the first try misses: the machine is shared, and one
        # burst from another process must not decide the capacity figure.
        r: dict[str, Any] = {}
        for attempt in (1, 2):
            try:
                r = loadgen.run_load(
                    target(),
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
            if r["added_latency_ms_p99"] is not None and r["added_latency_ms_p99"] < 50:
                break
        sweep.append(r)
        if "error" in r:
            break
        if r["added_latency_ms_p99"] is not None and r["added_latency_ms_p99"] < 50:
            capacity = n
        else:
            break
    out["sweep"] = sweep
    out["sessions_per_core_p99_50ms"] = capacity
    out["sweep_max_tried"] = plan.sweep[-1]
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


# -- report ----------------------------------------------------------------------------

ROWS = [
    ("CPU-s per 1000 relayed messages (GA passthrough)", "cpu_s_per_1000_messages", "<= 0.04"),
    ("CPU-s per 1000 messages, beta-bridged", "beta_cpu_s_per_1000_messages", ""),
    ("beta-bridged / passthrough CPU", "beta_over_passthrough", "<= 1.5"),
    ("CPU-s per 1000 messages, Gemini-translated", "gemini_cpu_s_per_1000_messages", ""),
    ("Gemini-translated / passthrough CPU", "gemini_over_passthrough", "<= 3"),
    ("sessions per core at added p99 < 50 ms", "sessions_per_core_p99_50ms", ">= 200"),
    ("added latency p50, 1 session (ms)", "added_latency_ms_p50_1_session", "<= 0.3"),
    ("added latency p99, 1 session (ms)", "added_latency_ms_p99_1_session", "<= 2"),
    ("RSS at start (MB)", "rss_start_mb", "<= 60"),
    ("RSS per idle session (KiB)", "rss_per_idle_session_kib", "<= 30"),
    ("RSS growth, active sessions over the soak (MB)", "active_rss_growth_mb", "flat"),
    ("session setups/s, sequential", "setups_per_s", ">= 300"),
    ("CPU ms per setup", "cpu_ms_per_setup", "<= 1.5"),
]


def markdown(results: dict[str, Any]) -> str:
    proxies = results["proxies"]
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
            if (
                key == "sessions_per_core_p99_50ms"
                and value is not None
                and value == p.get("sweep_max_tried")
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
        "| proxy | sessions | msgs/s | proxy CPU | added p50 ms | added p99 ms | direct p99 ms | generator send lateness p99 ms |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for p in proxies:
        for r in p.get("sweep", []):
            if "error" in r:
                lines.append(f"| {p['name']} | {r['sessions']} | error: {r['error']} | | | | | |")
                continue
            lines.append(
                f"| {p['name']} | {r['sessions']} | {r['messages_per_s']} | {r.get('cpu_fraction')} | "
                f"{r['added_latency_ms_p50']} | {r['added_latency_ms_p99']} | {r['direct_latency_ms_p99']} | "
                f"{r['send_lateness_ms_p99']} |"
            )
    return "\n".join(lines) + "\n"


def run(plan: Plan, out_dir: Path, *, with_nginx: bool, with_litellm: bool) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="rtgate-bench-"))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{_cores()} cores, {os.uname().machine}, Python {sys.version.split()[0]}",
        "quick": plan.quick,
        "proxies": [],
        "litellm_anchors": LITELLM_ANCHORS,
        "targets": TARGETS,
    }
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
    name = "quick" if plan.quick else "latest"
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(results))
    shutil.rmtree(workdir, ignore_errors=True)
    return results


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
    args = parser.parse_args(argv)
    # The generator (this process) shares the load core with the fake upstream.
    if _cores() > 1:
        os.sched_setaffinity(0, {int(LOAD_CORE)})
    results = run(
        Plan(args.quick),
        Path(args.out),
        with_nginx=not args.no_nginx,
        with_litellm=not args.no_litellm,
    )
    sys.stdout.write(markdown(results))


if __name__ == "__main__":
    main()
