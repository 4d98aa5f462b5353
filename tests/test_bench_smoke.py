"""The benchmark tools still run: a tiny load through rtgate and the fast fake upstream.

Never asserts speed (that is ``bench/``'s job); asserts that the tools
produce complete, consistent reports, so they cannot rot unnoticed. The fake
upstream also answers its 101 and ``session.created`` in one write, which
pins rtgate's handling of frames that arrive with the upgrade response.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from bench import loadgen
from bench.fake_upstream import start_in_thread
from rtgate.testing.gateway import open_gateway

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


def _config(upstream_port: int) -> str:
    from bench.run_all import gateway_config

    return gateway_config(upstream_port)


async def test_loadgen_through_rtgate_reports_every_field() -> None:
    server, thread = start_in_thread()
    try:
        with trio.fail_after(20):
            async with open_gateway(_config(server.port)) as gw:
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
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    import json

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
    ):
        assert key in rtgate, key
    table = (tmp_path / "quick.md").read_text()
    assert "| metric | target | rtgate |" in table
