"""Run every rtgate benchmark stage in one go; write JSON, a markdown table, a chart.

This file is the entry point only: it parses the command line, runs the
chosen stages and writes ``latest`` (``quick`` with ``--quick``) ``.json``,
``.md`` and ``.svg`` in ``--out`` (``bench/results`` by default). The stages:

* ``proxies`` (:mod:`bench.stage_proxies`): rtgate, nginx and LiteLLM side by
  side. On a 2-core machine the proxy under test is pinned to core 0, the
  load generator and the fake upstream share core 1, so what is measured on
  core 0 is the proxy alone. Every proxy relays to the same
  :mod:`bench.fake_upstream`; "direct" runs connect the generator to the fake
  itself, and added latency is the proxied figure minus the direct one.
  Measured: RSS at start and per idle session; added latency with one
  session; CPU per 1000 relayed messages (GA passthrough, beta-bridged,
  Gemini-translated); a session-count sweep for the p99 < 50 ms capacity;
  RSS of active sessions over time; sequential session setups through the
  ``mock/`` provider. nginx and LiteLLM (from ``/tmp/litellm-venv`` if it
  exists, :mod:`bench.rivals`) are measured the same way when available;
  neither is a project dependency.
* ``workers`` (:mod:`bench.stage_workers`): saturation throughput of
  ``rtgate serve --workers N`` against one worker.
* ``warmstart`` (:mod:`bench.warmstart`): time from connect to
  ``session.created`` when the upstream's handshake takes 0.3 s, through
  rtgate with and without a warm pool, against a local connection.

Shared pieces: :mod:`bench.procs` (child processes, pinning, ports, ``/proc``
readers), :mod:`bench.plan` (targets, budgets, run sizes), :mod:`bench.report`
(the markdown tables; the chart, :mod:`bench.chart`, is drawn when
matplotlib is installed: ``pip install -e '.[bench]'``, which ``make bench``
does).

    .venv/bin/python bench/run_all.py                 # full run, ~15 minutes
    .venv/bin/python bench/run_all.py --quick         # seconds; used by the smoke test
    .venv/bin/python bench/run_all.py --only workers  # one stage, merged into latest.json
    .venv/bin/python bench/run_all.py --quick --out /tmp/q --only warmstart
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import warmstart
from bench.plan import LITELLM_ANCHORS, TARGETS, Plan
from bench.procs import LOAD_CORE, ROOT, cpu_count
from bench.report import markdown, write_chart
from bench.stage_proxies import measure_proxies
from bench.stage_workers import measure_workers

STAGES = ("proxies", "workers", "warmstart")


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
        "machine": f"{cpu_count()} cores, {os.uname().machine}, Python {sys.version.split()[0]}",
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
        measure_proxies(results, plan, workdir, with_nginx=with_nginx, with_litellm=with_litellm)
    if "workers" in stages:
        results["workers"] = measure_workers(plan, workdir)
    if "warmstart" in stages:
        results["warmstart"] = measure_warmstart(plan)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(results))
    write_chart(results, out_dir / f"{name}.svg")
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def measure_warmstart(plan: Plan) -> dict[str, Any]:
    """The ``warmstart`` stage: :func:`bench.warmstart.measure`, dated like the other stages."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        **warmstart.measure(
            plan.quick,
            sessions=plan.warmstart_sessions,
            handshake_delay=plan.warmstart_handshake_delay,
        ),
    }


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
    if cpu_count() > 1:
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
