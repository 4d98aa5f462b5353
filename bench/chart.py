"""The chart of one benchmark run: sessions vs added p99 latency, and vs CPU per message.

Input is the JSON :mod:`bench.run_all` writes (``bench/results/latest.json``);
output an SVG with two panels, one line per proxy and mode:

* left: added round-trip p99 in ms (the proxied p99 minus the p99 of the same
  load sent straight to the fake upstream), on a scale that is linear below
  1 ms and logarithmic above, with the 50 ms budget drawn in. The direct
  connection is the floor: its added latency is 0 by definition, so its
  *absolute* p99 is drawn instead, dotted and labelled so;
* right: the proxy's CPU-seconds per 1000 relayed messages (the direct
  connection has no proxy, so no line there).

A line ends where the sweep ended: at the first load whose added p99 missed
50 ms, or at the largest load tried. :func:`series` is the pure data part
(tested without matplotlib); :func:`render` draws it (``pip install -e '.[bench]'``).

    .venv/bin/python bench/chart.py bench/results/latest.json [-o chart.svg]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MESSAGES_PER_SESSION_S = 120
"""Relayed messages per second of one session: 50 appends + 10 probes each way."""
BUDGET_MS = 50.0
MODES = (
    ("sweep", "passthrough"),
    ("beta_sweep", "beta-bridged"),
    ("gemini_sweep", "Gemini-translated"),
)
COLOURS = {"rtgate": "#1f5fbf", "nginx": "#2e8b3d", "LiteLLM": "#d9731a"}
MODE_STYLE = {
    "passthrough": ("-", "o"),
    "beta-bridged": ("--", "s"),
    "Gemini-translated": ("-.", "^"),
}
DIRECT_LABEL = "direct connection, no proxy (absolute p99: the floor)"


@dataclass(frozen=True)
class Series:
    """One line: a proxy in one mode (or the direct floor) over session counts."""

    label: str
    proxy: str
    mode: str
    sessions: tuple[int, ...]
    latency_ms: tuple[float, ...]
    """Added p99 (absolute p99 for the direct floor)."""
    cpu_s_per_1000: tuple[float | None, ...]
    floor: bool = False


def series(results: Mapping[str, Any]) -> list[Series]:
    """Every line the chart draws, from a results document (missing parts are skipped)."""
    out: list[Series] = []
    direct_sweep = (results.get("direct") or {}).get("sweep") or {}
    points = sorted(
        (int(n), r["latency_ms_p99"])
        for n, r in direct_sweep.items()
        if isinstance(r, Mapping) and r.get("latency_ms_p99") is not None
    )
    if points:
        out.append(
            Series(
                label=DIRECT_LABEL,
                proxy="direct",
                mode="direct",
                sessions=tuple(n for n, _ in points),
                latency_ms=tuple(float(v) for _, v in points),
                cpu_s_per_1000=tuple(None for _ in points),
                floor=True,
            )
        )
    for proxy in results.get("proxies") or []:
        for key, mode in MODES:
            rows = [
                r
                for r in proxy.get(key) or []
                if "error" not in r and r.get("added_latency_ms_p99") is not None
            ]
            if not rows:
                continue
            out.append(
                Series(
                    label=f"{proxy['name']}, {mode}",
                    proxy=str(proxy["name"]),
                    mode=mode,
                    sessions=tuple(int(r["sessions"]) for r in rows),
                    latency_ms=tuple(float(r["added_latency_ms_p99"]) for r in rows),
                    cpu_s_per_1000=tuple(
                        None
                        if r.get("cpu_s_per_1000_messages") is None
                        else float(r["cpu_s_per_1000_messages"])
                        for r in rows
                    ),
                )
            )
    return out


def render(results: Mapping[str, Any], out: Path) -> Path:
    """Draw the two panels into ``out`` (SVG or PNG by suffix); returns ``out``."""
    import matplotlib
    from matplotlib.figure import Figure

    # Text stays text and ids are stable, so a re-drawn chart diffs by its data only.
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "rtgate-bench"
    lines = series(results)
    fig = Figure(figsize=(12.5, 6.2), layout="constrained")
    latency, cpu = fig.subplots(1, 2)
    for s in lines:
        if s.floor:
            style: dict[str, Any] = {"color": "#777777", "linestyle": ":", "marker": "."}
        else:
            dash, marker = MODE_STYLE.get(s.mode, ("-", "o"))
            style = {"color": COLOURS.get(s.proxy, "#7a3fb0"), "linestyle": dash, "marker": marker}
        latency.plot(s.sessions, s.latency_ms, label=s.label, linewidth=1.6, **style)
        cpu_points = [(n, v) for n, v in zip(s.sessions, s.cpu_s_per_1000, strict=True) if v]
        if cpu_points:
            cpu.plot(*zip(*cpu_points, strict=True), label=s.label, linewidth=1.6, **style)
    latency.axhline(
        BUDGET_MS, color="#b0282f", linestyle=(0, (1, 3)), linewidth=1.2, label="p99 budget, 50 ms"
    )
    latency.set_yscale("symlog", linthresh=1.0, linscale=0.7)
    latency.set_ylim(0, 300)
    ticks = [0, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200]
    latency.set_yticks(ticks, [f"{t:g}" for t in ticks])
    latency.set_title("Added round-trip latency, p99 (linear below 1 ms, log above)")
    latency.set_ylabel("ms added to the direct round trip at the same load")
    cpu.set_ylim(bottom=0)
    cpu.set_title("Proxy CPU per message (proxy pinned to one core)")
    cpu.set_ylabel("CPU-seconds per 1000 relayed messages")
    for ax in (latency, cpu):
        ax.set_xlabel("concurrent audio sessions (each 20 ms appends at 50/s, deltas back)")
        ax.grid(True, which="major", color="#dddddd", linewidth=0.6)
        top = ax.secondary_xaxis(
            "top",
            functions=(
                lambda n: n * MESSAGES_PER_SESSION_S,
                lambda m: m / MESSAGES_PER_SESSION_S,
            ),
        )
        top.set_xlabel("relayed messages per second")
    handles, labels = latency.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    where = results.get("machine", "unknown machine")
    fig.suptitle(
        f"rtgate benchmark, {results.get('date', '')}, {where}: "
        "proxy on core 0, load generator and fake upstream on core 1\n"
        "added = proxied p99 minus direct p99 at the same load (0: within the direct run's noise); "
        "a line ends at the first load over 50 ms or at the largest load tried",
        fontsize="medium",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Date": None} if out.suffix == ".svg" else None)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="chart of a bench/run_all.py results file")
    parser.add_argument("results", type=Path, help="results JSON (bench/results/latest.json)")
    parser.add_argument("-o", "--out", type=Path, help="output .svg or .png (default: beside it)")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    out = render(results, args.out or args.results.with_suffix(".svg"))
    sys.stdout.write(f"{out}\n")


if __name__ == "__main__":
    main()
