"""What a reader sees of a run: the markdown tables of ``latest.md`` and the chart call.

Owns: the rows of the per-proxy table (label, results key, target), the
floor table (rtgate next to :mod:`bench.floors`), the session sweep table, the ``workers`` tables and scaling sentences, the
``warmstart`` rows, and :func:`write_chart` (:mod:`bench.chart`, or a note
when matplotlib is missing). Pure formatting of the results dict.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import chart
from bench.plan import LITELLM_ANCHORS, TARGETS
from bench.procs import LOAD_CORE, PROXY_CORE, core_list

ROWS = [
    ("CPU-s per 1000 relayed messages (GA passthrough)", "cpu_s_per_1000_messages", "<= 0.04"),
    ("CPU-s per 1000 messages, beta-bridged", "beta_cpu_s_per_1000_messages", ""),
    ("beta-bridged / passthrough CPU", "beta_over_passthrough", "<= 1.5"),
    ("CPU-s per 1000 messages, Gemini-translated", "gemini_cpu_s_per_1000_messages", ""),
    ("Gemini-translated / passthrough CPU", "gemini_over_passthrough", "<= 3"),
    ("CPU-s per 1000 messages, TLS upstream (wss://)", "tls_cpu_s_per_1000_messages", ""),
    ("TLS upstream / plain upstream CPU", "tls_over_passthrough", ""),
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
    if results.get("warmstart"):
        lines += _warmstart_markdown(results["warmstart"])
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
    lines += _floors_markdown(results.get("floors") or [], proxies)
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


FLOOR_ROWS = [
    ("CPU-s per 1000 relayed messages (GA passthrough)", "cpu_s_per_1000_messages"),
    ("added latency p50, 1 session (ms)", "added_latency_ms_p50_1_session"),
    ("added latency p99, 1 session (ms)", "added_latency_ms_p99_1_session"),
]


def _floors_markdown(floors: list[dict[str, Any]], proxies: list[dict[str, Any]]) -> list[str]:
    """rtgate next to the byte pipes of :mod:`bench.floors` (and nginx), same run and load."""
    if not floors:
        return []
    by_name = {p["name"]: p for p in proxies}
    columns = [by_name[n] for n in ("rtgate",) if n in by_name] + floors
    columns += [by_name[n] for n in ("nginx",) if n in by_name]
    lines = [
        "",
        "The floor under a Python relay (`bench/floors.py`, same run and load): byte pipes "
        "that copy bytes both ways after the upgrade and do no per-message work, on trio "
        "and on a plain edge-triggered epoll loop.",
        "",
        "| metric | " + " | ".join(c["name"] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, key in FLOOR_ROWS:
        cells = ["n/a" if c.get(key) is None else str(c[key]) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rtgate_cpu = by_name.get("rtgate", {}).get("cpu_s_per_1000_messages")
    if rtgate_cpu:
        cells = [
            f"{rtgate_cpu / c['cpu_s_per_1000_messages']:.2f}"
            if c.get("cpu_s_per_1000_messages")
            else "n/a"
            for c in columns
        ]
        lines.append("| rtgate's CPU over this one's | " + " | ".join(cells) + " |")
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
            f"| {core_list(r['proxy_cores'])} / {core_list(r['load_cores'])} "
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


def _warmstart_markdown(w: dict[str, Any]) -> list[str]:
    """Warm pool against a fresh dial and a local connection: the handshake the pool saves."""
    handshake_ms = round(w["handshake_delay_s"] * 1000)
    within = TARGETS["warm_minus_local_ms"]
    rows = [
        (
            "time to session.created, warm pool, upstream handshake "
            f"{handshake_ms} ms (p50/p99 ms)",
            f"within {within:g} ms of a local connection",
            "rtgate_warm",
        ),
        ("the same, local connection, no handshake delay (reference)", "", "local"),
        ("the same, rtgate without a warm pool (fresh dial per session)", "", "rtgate_cold"),
        (f"the same, direct to the upstream ({handshake_ms} ms handshake)", "", "direct_slow"),
    ]
    lines = [
        "",
        f"### Warm start: connect to `session.created` (measured {w.get('date', 'n/a')}, "
        f"{w['sessions']} sequential sessions per row)",
        "",
        f"A fake upstream answers every upgrade {handshake_ms} ms late (a far provider's TCP + "
        f"TLS + upgrade). rtgate pinned to core {PROXY_CORE}, fakes and client on core "
        f"{LOAD_CORE}; warm_pool size {w['warm_size']}, one warm session every "
        f"{w['warm_pace_s']:g} s.",
        "",
        "| metric | target | rtgate |",
        "|---|---|---|",
    ]
    for label, target, key in rows:
        r = w[key]
        lines.append(f"| {label} | {target} | {r['p50_ms']} / {r['p99_ms']} |")
    saved = round(w["rtgate_cold"]["p50_ms"] - w["rtgate_warm"]["p50_ms"], 2)
    counters = w.get("warm_counters", {})
    lines += [
        "",
        f"Warm minus local: p50 {w['warm_minus_local_p50_ms']} ms, p99 "
        f"{w['warm_minus_local_p99_ms']} ms (target: <= {within:g}). The warm pool saved "
        f"{saved} ms (p50) against a fresh dial; warm hand-outs {counters.get('handouts')}, "
        f"misses {counters.get('misses')}.",
    ]
    return lines


def _slash(values: Sequence[Any]) -> str:
    return " / ".join("n/a" if v is None else str(v) for v in values)


def write_chart(results: dict[str, Any], path: Path) -> Path | None:
    """The chart (:mod:`bench.chart`), or a note on stderr when matplotlib is missing."""
    try:
        return chart.render(results, path)
    except ImportError:
        sys.stderr.write(
            "no chart: matplotlib is not installed (pip install -e '.[bench]', or make bench)\n"
        )
        return None
