"""The benchmark tools still run: a tiny load through rtgate and the fast fake upstream.

Never asserts speed (that is ``bench/``'s job); asserts that the tools
produce complete, consistent reports, so they cannot rot unnoticed. The fake
upstream also answers its 101 and ``session.created`` in one write, which
pins rtgate's handling of frames that arrive with the upgrade response.
The chart is drawn only where matplotlib is installed (``.[bench]``); its data
extraction is tested everywhere. They take well over 10 s (``run_all --quick``
alone runs every stage), so they run from ``make bench-test``, not ``make test``
(the ``bench`` marker; ``pytest -m bench`` selects them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from time import monotonic_ns as time_ns
from typing import Any

import pytest
import trio

from bench import ab, chart, loadgen, report
from bench.fake_upstream import start_in_thread
from bench.floors import floor
from bench.procs import gateway_config, rtgate
from rtgate.testing.gateway import open_gateway

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parent.parent

LOAD_FIELDS = {
    "sessions",
    "seconds",
    "messages_sent",
    "messages_received",
    "relayed_messages_in_window",
    "probes",
    "latency_ms_p50",
    "latency_ms_p99",
    "send_lateness_ms_p99",
    "cpu_seconds",
    "cpu_s_per_1000_messages",
    "rss_end_mb",
}


async def test_loadgen_through_rtgate_reports_every_field() -> None:
    server, thread = start_in_thread()
    try:
        with trio.fail_after(20):
            async with open_gateway(gateway_config(server.port)) as gw:
                base = f"{gw.ws_url}/v1/realtime?model="
                pid = [os.getpid()]
                report = await trio.to_thread.run_sync(
                    lambda: loadgen.run_load(
                        loadgen.Target(base + "bench-openai"), 2, 1.0, warmup=0.2, pids=pid
                    )
                )
                beta = await trio.to_thread.run_sync(
                    lambda: loadgen.run_load(
                        loadgen.Target(base + "bench-openai", beta=True), 1, 0.5, warmup=0.1
                    )
                )
                setup = await trio.to_thread.run_sync(
                    lambda: loadgen.setup_rate(loadgen.Target(base + "mock-realtime"), 3, pid)
                )
                idle = await trio.to_thread.run_sync(
                    lambda: loadgen.idle_memory(
                        loadgen.Target(base + "bench-openai"), 2, pid, settle=0.1
                    )
                )
    finally:
        server.stop()
        thread.join(5)
    assert report.keys() >= LOAD_FIELDS
    assert report["sessions"] == 2
    # 2 sessions x 50 appends/s (+ probes) each way for ~1 s: every append came back as a delta.
    assert report["messages_sent"] >= 80
    assert report["messages_received"] >= 80
    assert report["probes"] >= 10
    assert report["error_events"] == 0
    assert report["latency_ms_p50"] is not None
    assert report["latency_ms_p99"] >= report["latency_ms_p50"]
    assert beta["messages_received"] >= 20  # renamed audio deltas reached the beta client
    assert setup["setups"] == 3
    assert setup["setups_per_s"] > 0
    assert setup["cpu_ms_per_setup"] is not None
    assert {"rss_before_mb", "rss_after_mb", "rss_per_idle_session_kib"} <= idle.keys()
    assert server.sessions >= 5  # 2 + 1 load sessions, 2 idle ones (mock setups dial nothing)


def test_fake_upstream_echoes_audio_and_probes() -> None:
    server, thread = start_in_thread()
    try:
        url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=x"
        report = loadgen.run_load(loadgen.Target(url), 1, 0.3, warmup=0.1)
    finally:
        server.stop()
        thread.join(5)
    assert report["messages_sent"] >= 15
    assert abs(report["messages_received"] - report["messages_sent"]) <= 2  # in flight at the end
    assert report["probes"] >= 2
    assert report["error_events"] == 0


HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def test_loadgen_sync_start_and_samples() -> None:
    """Generators started together: sending waits for the start time; samples are kept."""
    server, thread = start_in_thread()
    asked: list[int] = []

    def start() -> int:
        at = time_ns() + 300_000_000
        asked.append(at)
        return at

    try:
        url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=x"
        t0 = time_ns()
        report = loadgen.run_load(
            loadgen.Target(url), 1, 0.3, warmup=0.1, wait_start=start, keep_samples=True
        )
        elapsed = time_ns() - t0
    finally:
        server.stop()
        thread.join(5)
    assert len(asked) == 1
    assert elapsed >= 700_000_000  # 0.3 s wait + 0.1 s warmup + 0.3 s measured
    assert len(report["latency_samples_ms"]) == report["probes"] >= 2
    assert max(report["latency_samples_ms"]) == pytest.approx(report["latency_ms_max"], abs=1e-3)


def _results() -> dict[str, object]:
    def rows(added: list[float], cpu: list[float]) -> list[dict[str, object]]:
        return [
            {"sessions": n, "added_latency_ms_p99": a, "cpu_s_per_1000_messages": c}
            for n, a, c in zip((100, 200, 300), added, cpu, strict=False)
        ]

    return {
        "date": "2026-01-01 00:00",
        "machine": "2 cores",
        "direct": {"sweep": {"200": {"latency_ms_p99": 0.5}, "100": {"latency_ms_p99": 0.3}}},
        "proxies": [
            {
                "name": "rtgate",
                "sweep": rows([0.2, 1.0, 9.0], [0.05, 0.04, 0.03]),
                "beta_sweep": rows([0.3, 60.0], [0.05, 0.045]),
                "gemini_sweep": [{"sessions": 100, "error": "closed under load"}],
            },
            {"name": "nginx", "sweep": rows([0.0, 0.0, 0.0], [0.02, 0.015, 0.013])},
        ],
    }


def test_chart_series_follow_the_results() -> None:
    lines = {s.label: s for s in chart.series(_results())}
    assert set(lines) == {
        chart.DIRECT_LABEL,
        "rtgate, passthrough",
        "rtgate, beta-bridged",
        "nginx, passthrough",
    }  # an errored sweep draws no line
    floor = lines[chart.DIRECT_LABEL]
    assert floor.floor
    assert floor.sessions == (100, 200)  # sorted, whatever order the JSON keys came in
    assert floor.latency_ms == (0.3, 0.5)
    assert set(floor.cpu_s_per_1000) == {None}  # no proxy, no proxy CPU
    beta = lines["rtgate, beta-bridged"]
    assert beta.sessions == (100, 200)
    assert beta.latency_ms == (0.3, 60.0)  # the miss that ended the sweep is drawn
    assert lines["nginx, passthrough"].cpu_s_per_1000 == (0.02, 0.015, 0.013)
    assert chart.series({}) == []


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is the optional 'bench' extra")
def test_chart_renders_svg_and_png(tmp_path: Path) -> None:
    svg = chart.render(_results(), tmp_path / "c.svg")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml")
    for label in ("rtgate, beta-bridged", "nginx, passthrough", "p99 budget, 50 ms"):
        assert label in text  # text stays text (svg.fonttype none)
    png = chart.render(_results(), tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_all_quick_writes_json_and_markdown(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run_all.py"),
            "--quick",
            "--out",
            str(tmp_path),
            "--no-nginx",
            "--no-litellm",
            "--only",
            "proxies",  # the workers stage has its own test below
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    data = json.loads((tmp_path / "quick.json").read_text())
    rtgate = data["proxies"][0]
    assert rtgate["name"] == "rtgate"
    for key in (
        "cpu_s_per_1000_messages",
        "beta_cpu_s_per_1000_messages",
        "added_latency_ms_p50_1_session",
        "rss_start_mb",
        "rss_per_idle_session_kib",
        "setups_per_s",
        "sessions_per_core_p99_50ms",
        "beta_sessions_per_core_p99_50ms",
        "gemini_sessions_per_core_p99_50ms",
    ):
        assert key in rtgate, key
    assert rtgate["beta_sweep"][0]["sessions"] == rtgate["gemini_sweep"][0]["sessions"] == 2
    assert data["direct"]["sweep"]["2"]["latency_ms_p99"] is not None
    table = (tmp_path / "quick.md").read_text()
    assert "| metric | target | rtgate |" in table
    assert "| rtgate, Gemini-translated | 2 |" in table
    assert (tmp_path / "quick.svg").exists() == HAS_MATPLOTLIB
    # Through rtgate to a wss:// fake upstream (OpenSSL on both ends): audio comes back.
    assert rtgate["tls"]["messages_received"] > 0
    assert rtgate["tls"]["error_events"] == 0
    assert rtgate["tls_cpu_s_per_1000_messages"] is not None
    assert "| CPU-s per 1000 messages, TLS upstream (wss://) |" in table
    floors = {f["name"]: f for f in data["floors"]}
    assert set(floors) == {"byte pipe on trio", "byte pipe on plain epoll"}
    for f in floors.values():
        assert f["passthrough"]["messages_received"] > 0
        assert f["cpu_s_per_1000_messages"] is not None
    assert "| metric | rtgate | byte pipe on trio | byte pipe on plain epoll |" in table
    assert "| rtgate's CPU over this one's | 1.00 |" in table


@pytest.mark.parametrize("kind", ["trio", "epoll"])
def test_floor_relays_copy_bytes_both_ways_until_close(kind: str, tmp_path: Path) -> None:
    """A floor relay is a faithful byte pipe: what goes in comes out, in order, both ways,
    including a payload larger than one read, and a close reaches the other side."""
    with socket.create_server(("127.0.0.1", 0)) as upstream_listener:
        upstream_port = upstream_listener.getsockname()[1]
        with floor(kind, tmp_path, upstream_port) as (port, _pids):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            big = os.urandom(200_000)
            client.sendall(b"hello" + big)
            upstream = _upstream_of(upstream_listener)
            with client, upstream:
                assert _read_exactly(upstream, 5 + len(big)) == b"hello" + big
                upstream.sendall(b"back")
                assert _read_exactly(client, 4) == b"back"
                client.close()
                assert upstream.recv(1) == b""


def _upstream_of(listener: socket.socket) -> socket.socket:
    """The relay's upstream connection that carries data (the start-up port probe
    also made one, which carries nothing and closes)."""
    listener.settimeout(10)
    while True:
        conn, _ = listener.accept()
        conn.settimeout(10)
        if conn.recv(1, socket.MSG_PEEK):
            return conn
        conn.close()


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        assert chunk, f"closed after {len(chunks)} of {n} bytes"
        chunks += chunk
    return bytes(chunks)


def test_workers_stage_adds_its_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    """``--only workers`` measures every worker count and layout the cores allow, adds
    its rows to the existing results file and leaves the other stages' results alone."""
    from bench import run_all

    old = {"date": "earlier", "machine": "m", "proxies": [], "direct": {"one": {"x": 1}}}
    (tmp_path / "quick.json").write_text(json.dumps(old))
    results = run_all.run(
        run_all.Plan(quick=True), tmp_path, with_nginx=False, with_litellm=False, stages=["workers"]
    )
    data = json.loads((tmp_path / "quick.json").read_text())
    assert data == json.loads(json.dumps(results, default=str))
    assert data["date"] == "earlier"
    assert data["direct"] == {"one": {"x": 1}}

    workers = data["workers"]
    runs = {(r["workers"], r["layout"]): r for r in workers["runs"]}
    if (os.cpu_count() or 1) >= 2:
        # One worker: load on its own core, and co-located; two workers: co-located only.
        assert set(runs) == {(1, "dedicated"), (1, "co-located"), (2, "co-located")}
        dedicated = runs[1, "dedicated"]
        assert not set(dedicated["proxy_cores"]) & set(dedicated["load_cores"])
    for (n, _), r in runs.items():
        assert "error" not in r, r
        assert len(r["worker_cpu_fraction"]) == len(r["worker_sessions"]) == n
        assert sum(r["worker_sessions"]) == r["sessions"] == 2 * n  # every session found a worker
        assert r["generators"] == n
        assert r["probes"] > 0
        assert r["messages_per_s"] > 0
    assert {s["workers"] for s in workers["summary"]} == {1, 2}
    assert workers["scaling"][0]["workers"] == 2
    table = (tmp_path / "quick.md").read_text()
    assert "--workers N" in table
    assert "| metric |" not in table  # no proxies measured in this file
    assert (tmp_path / "quick.svg").exists() == HAS_MATPLOTLIB


def _row(
    n: int, layout: str, per_worker: int, msgs: int, p99: float, busiest: float
) -> dict[str, Any]:
    return {
        "workers": n,
        "layout": layout,
        "sessions_per_worker": per_worker,
        "messages_per_s": msgs,
        "latency_ms_p99": p99,
        "busiest_worker_cpu_fraction": busiest,
        "worker_cores_busy_fraction": 0.5,
        "load_cores_busy_fraction": 0.5,
    }


def test_workers_scaling_compares_like_with_like() -> None:
    """Measured ratios from saturation rates; CPU efficiency only where cores had room."""
    from bench.stage_workers import CO_LOCATED, DEDICATED, scaling

    runs = [
        _row(1, DEDICATED, 100, 12000, 1.0, 0.5),
        _row(1, DEDICATED, 200, 24000, 9.0, 0.95),
        _row(1, CO_LOCATED, 100, 12000, 2.0, 0.4),
        _row(1, CO_LOCATED, 150, 18000, 30.0, 0.5),
        _row(2, CO_LOCATED, 100, 24000, 3.0, 0.5),
        _row(2, CO_LOCATED, 150, 36000, 60.0, 0.6),  # over 50 ms: not compared
    ]
    runs[3]["worker_cores_busy_fraction"] = 1.0  # a full core distorts CPU per message
    summary = [
        {"workers": 1, "layout": DEDICATED, "saturation_messages_per_s": 24000},
        {"workers": 1, "layout": CO_LOCATED, "saturation_messages_per_s": 18000},
        {"workers": 2, "layout": CO_LOCATED, "saturation_messages_per_s": 24000},
    ]
    [row] = scaling(runs, summary, [1, 2])
    assert row["workers"] == 2
    assert row["target_ratio"] == 1.6
    assert "measured_ratio" not in row  # no dedicated run of two workers
    assert row["measured_co_located_ratio"] == round(24000 / 18000, 2)
    assert row["efficiency_by_sessions_per_worker"] == {100: 0.8}  # 0.4 / 0.5
    assert row["efficiency"] == 0.8
    assert row["projected_ratio"] == 1.6
    assert row["projected_messages_per_s"] == round(2 * 0.8 * 24000)

    summary.append({"workers": 2, "layout": DEDICATED, "saturation_messages_per_s": 45600})
    [row] = scaling(runs, summary, [1, 2])
    assert row["measured_ratio"] == 1.9


def test_warmstart_stage_adds_its_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    """``--only warmstart``: every target timed, each warm session either took a warm
    connection or was counted as a miss, rows added to the markdown, other stages kept."""
    from bench import run_all

    old = {"date": "earlier", "machine": "m", "proxies": [], "direct": {"one": {"x": 1}}}
    (tmp_path / "quick.json").write_text(json.dumps(old))
    plan = run_all.Plan(quick=True)
    plan.warmstart_sessions = 3
    plan.warmstart_handshake_delay = 0.05
    run_all.run(plan, tmp_path, with_nginx=False, with_litellm=False, stages=["warmstart"])
    data = json.loads((tmp_path / "quick.json").read_text())
    assert data["date"] == "earlier"
    assert data["direct"] == {"one": {"x": 1}}

    warm = data["warmstart"]
    assert warm["sessions"] == 3
    assert warm["handshake_delay_s"] == 0.05
    for key in ("local", "direct_slow", "rtgate_cold", "rtgate_warm"):
        assert warm[key]["n"] == 3, key
        assert 0 < warm[key]["p50_ms"] <= warm[key]["p99_ms"] <= warm[key]["max_ms"], key
    counters = warm["warm_counters"]
    assert counters["handouts"] + counters["misses"] == 3  # the cold model group counts neither
    assert counters["handouts"] >= 1  # the pool filled while the cold sessions ran
    assert data["targets"]["warm_minus_local_ms"] == 5.0
    table = (tmp_path / "quick.md").read_text()
    assert (
        "| time to session.created, warm pool, upstream handshake 50 ms (p50/p99 ms) "
        "| within 5 ms of a local connection | "
        f"{warm['rtgate_warm']['p50_ms']} / {warm['rtgate_warm']['p99_ms']} |"
    ) in table
    assert f"| {warm['rtgate_cold']['p50_ms']} / {warm['rtgate_cold']['p99_ms']} |" in table
    assert "| metric | target | rtgate | " not in table  # no proxies measured in this file


def test_bench_gateway_runs_the_code_of_the_tree_it_is_given(tmp_path: Path) -> None:
    """What the A/B tool relies on: the gateway imports rtgate from the tree it was given,
    not from this checkout (``python -m`` puts the working directory first on ``sys.path``)."""
    tree = tmp_path / "tree"
    (tree / "rtgate").mkdir(parents=True)
    (tree / "rtgate" / "__init__.py").write_text("")
    (tree / "rtgate" / "__main__.py").write_text(
        "import socket, sys\n"
        "import rtgate\n"
        "print('running', rtgate.__file__, flush=True)\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "server = socket.create_server(('127.0.0.1', port))\n"
        "while True:\n"
        "    server.accept()[0].close()\n"
    )
    with rtgate(tmp_path, upstream_port=1, tree=tree):
        pass
    assert f"running {tree / 'rtgate' / '__init__.py'}" in (tmp_path / "rtgate.log").read_text()


def test_ab_summary_counts_the_pairs_the_candidate_won() -> None:
    def run(cpu: float, p50: float) -> dict[str, Any]:
        return {"cpu_s_per_1000_messages": cpu, "latency_ms_p50": p50}

    summary = ab.summarise(
        {
            "base": [run(0.04, 0.3), run(0.05, 0.3), run(0.04, 0.2)],
            "candidate": [run(0.03, 0.2), run(0.06, 0.4), run(0.035, 0.2)],
        }
    )
    assert summary["candidate_won_pairs"] == 2
    assert summary["pairs"] == 3
    assert summary["cpu_mean"] == {"base": 0.0433, "candidate": 0.0417}
    assert summary["p50_mean_ms"] == {"base": 0.267, "candidate": 0.267}


def test_report_says_when_the_generator_bounds_the_capacity() -> None:
    """A capacity equal to the most sessions the sweep tried is the generator's limit, and
    the report says so; the floor table divides rtgate's CPU by each relay's."""

    def row(n: int) -> dict[str, object]:
        return {
            "sessions": n,
            "messages_per_s": 120 * n,
            "cpu_fraction": 0.5,
            "cpu_s_per_1000_messages": 0.04,
            "added_latency_ms_p50": 0.1,
            "added_latency_ms_p99": 1.0,
            "direct_latency_ms_p99": 0.5,
            "send_lateness_ms_p99": 0.1,
        }

    def proxy(name: str, capacity: int, cpu: float) -> dict[str, object]:
        return {
            "name": name,
            "sessions_per_core_p99_50ms": capacity,
            "sweep_max_tried": 300,
            "sweep": [row(250), row(300)],
            "cpu_s_per_1000_messages": cpu,
        }

    table = report.markdown(
        {
            "date": "2026-01-01 00:00",
            "machine": "2 cores",
            "proxies": [proxy("rtgate", 300, 0.045), proxy("nginx", 250, 0.015)],
            "floors": [{"name": "byte pipe on trio", "cpu_s_per_1000_messages": 0.03}],
        }
    )
    capacity = "| sessions per core at added p99 < 50 ms | >= 200 |"
    assert f"{capacity} >= 300 (generator limit) | 250 | 50 |" in table
    assert "| rtgate's CPU over this one's | 1.00 | 1.50 | 3.00 |" in table
