"""Relay CPU per message with traces on (sampler always_on) against off, in one run.

Same tree, same load, alternating runs (the order flips every pair, as in
``bench/ab.py``): "off" is the bench config; "on" adds ``rtgate.telemetry.otel``
with ``OTEL_TRACES_SAMPLER=always_on`` and exports to a local OTLP/HTTP receiver
(``rtgate.testing.otlp_receiver``) pinned with the load generator. Goal: "on"
within 3 % of "off", because no span is built per frame.

    .venv/bin/python bench/tracing.py --pairs 4 --sessions 50 --seconds 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.ab import summarise
from bench.loadgen import Target
from bench.procs import (
    LOAD_CORE,
    PYTHON,
    fake_upstream,
    free_port,
    gateway_config,
    pin,
    process,
    rtgate,
    wait_port,
)

GOAL = 0.03


def traced_config(upstream_port: int) -> str:
    return gateway_config(upstream_port) + "  telemetry:\n    otel: true\n"


def spans_received(log: Path) -> int:
    return sum(
        int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("spans ")
    )


def compare(*, pairs: int, sessions: int, seconds: float, workdir: Path) -> dict[str, Any]:
    receiver_port = free_port()
    receiver_log = workdir / "otlp-receiver.log"
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver_port}"
    os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "candidate": []}
    receiver = [
        *pin(LOAD_CORE),
        PYTHON,
        "-m",
        "rtgate.testing.otlp_receiver",
        "--port",
        str(receiver_port),
    ]
    with (
        process(receiver, log=receiver_log) as proc,
        fake_upstream(workdir) as (upstream_port, upstream_pid),
    ):
        wait_port(receiver_port, proc=proc)
        for pair in range(pairs):
            order = ("base", "candidate") if pair % 2 == 0 else ("candidate", "base")
            for side in order:
                text = traced_config(upstream_port) if side == "candidate" else None
                with rtgate(workdir, upstream_port, text) as (port, pid):
                    url = f"ws://127.0.0.1:{port}/v1/realtime?model=bench-openai"
                    report = loadgen.run_load(
                        Target(url), sessions, seconds, pids=[pid], other_pids=[upstream_pid]
                    )
                runs[side].append(report)
                label = "traces on" if side == "candidate" else "traces off"
                print(
                    f"pair {pair + 1} {label:10} cpu-s/1000 {report['cpu_s_per_1000_messages']}"
                    f"  p50 {report['latency_ms_p50']} ms  p99 {report['latency_ms_p99']} ms",
                    flush=True,
                )
    result = summarise(runs)
    result["spans_received"] = spans_received(receiver_log)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rtgate-tracing-") as tmp:
        result = compare(
            pairs=args.pairs, sessions=args.sessions, seconds=args.seconds, workdir=Path(tmp)
        )
    cpu = result["cpu_mean"]
    off = [r["cpu_s_per_1000_messages"] for r in result["runs"]["base"]]
    on = [r["cpu_s_per_1000_messages"] for r in result["runs"]["candidate"]]
    ratio = cpu["candidate"] / cpu["base"] - 1
    print(
        f"traces off: {cpu['base']} CPU-s/1000 (stdev {statistics.pstdev(off):.4f}); "
        f"traces on: {cpu['candidate']} CPU-s/1000 (stdev {statistics.pstdev(on):.4f}); "
        f"on/off {ratio:+.1%} (goal within {GOAL:.0%}); on cheaper in "
        f"{result['candidate_won_pairs']} of {result['pairs']} pairs; "
        f"spans received {result['spans_received']}"
    )


if __name__ == "__main__":
    main()
