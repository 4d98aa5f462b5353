"""A/B two versions of rtgate under the same load, in alternating runs.

The host's speed drifts by 10-20 % within minutes, so a change is judged by
runs of both versions taken in turn, many times, not by two runs far apart.
Each run starts a fresh pinned gateway from its own source tree
(:func:`bench.procs.rtgate` with ``tree``: a gateway started from the main
checkout's directory runs the main checkout's code whatever ``PYTHONPATH``
says, which once made an A/B compare a version with itself).

    .venv/bin/python bench/ab.py --base HEAD~1                 # the working tree vs HEAD~1
    .venv/bin/python bench/ab.py --base main --candidate ../other-tree --pairs 8
    .venv/bin/python bench/ab.py --base main --gemini          # a Gemini-translated session

``--base``/``--candidate`` take a directory or a git revision (checked out in
a temporary worktree). Prints one line per run and a summary: mean CPU-s per
1000 messages and round-trip p50 of each side, and how many pairs the
candidate won. The fake upstream and the load generator are this checkout's.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.loadgen import Target
from bench.procs import ROOT, fake_upstream, rtgate


@contextlib.contextmanager
def source_tree(spec: str, tree: Path) -> Iterator[Path]:
    """``spec`` as a directory: itself if it is one, else a worktree of that git revision
    checked out at ``tree``."""
    if Path(spec).is_dir():
        yield Path(spec).resolve()
        return
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), spec], check=True
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
        )


def compare(
    base: Path,
    candidate: Path,
    *,
    pairs: int,
    sessions: int,
    seconds: float,
    workdir: Path,
    gemini: bool = False,
) -> dict[str, Any]:
    """Alternate base and candidate runs (the order flips every pair); every run's report.

    ``gemini``: the sessions go through the Gemini translator (the fake upstream speaks
    Gemini Live on that path) instead of the OpenAI passthrough.
    """
    model = "bench-gemini" if gemini else "bench-openai"
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "candidate": []}
    with fake_upstream(workdir) as (upstream_port, upstream_pid):
        for pair in range(pairs):
            order = ("base", "candidate") if pair % 2 == 0 else ("candidate", "base")
            for side in order:
                tree = base if side == "base" else candidate
                with rtgate(workdir, upstream_port, tree=tree) as (port, pid):
                    url = f"ws://127.0.0.1:{port}/v1/realtime?model={model}"
                    report = loadgen.run_load(
                        Target(url, audio_probes=gemini),
                        sessions,
                        seconds,
                        pids=[pid],
                        other_pids=[upstream_pid],
                    )
                runs[side].append(report)
                print(
                    f"pair {pair + 1} {side:9} cpu-s/1000 {report['cpu_s_per_1000_messages']}"
                    f"  p50 {report['latency_ms_p50']} ms  p99 {report['latency_ms_p99']} ms",
                    flush=True,
                )
    return summarise(runs)


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Means of both sides and the pairs the candidate won (lower CPU per message)."""
    cpu = {side: [r["cpu_s_per_1000_messages"] for r in reports] for side, reports in runs.items()}
    p50 = {side: [r["latency_ms_p50"] for r in reports] for side, reports in runs.items()}
    won = sum(c < b for b, c in zip(cpu["base"], cpu["candidate"], strict=True))
    return {
        "runs": runs,
        "cpu_mean": {side: round(statistics.mean(v), 4) for side, v in cpu.items()},
        "p50_mean_ms": {side: round(statistics.mean(v), 3) for side, v in p50.items()},
        "candidate_won_pairs": won,
        "pairs": len(cpu["base"]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="directory or git revision")
    parser.add_argument("--candidate", default=str(ROOT), help="directory or git revision")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--gemini", action="store_true", help="Gemini-translated sessions")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rtgate-ab-") as tmp:
        workdir = Path(tmp)
        with (
            source_tree(args.base, workdir / "base") as base,
            source_tree(args.candidate, workdir / "candidate") as candidate,
        ):
            result = compare(
                base,
                candidate,
                pairs=args.pairs,
                sessions=args.sessions,
                seconds=args.seconds,
                workdir=workdir,
                gemini=args.gemini,
            )
    cpu, p50 = result["cpu_mean"], result["p50_mean_ms"]
    print(
        f"base: {cpu['base']} CPU-s/1000, p50 {p50['base']} ms; "
        f"candidate: {cpu['candidate']} CPU-s/1000, p50 {p50['candidate']} ms; "
        f"candidate cheaper in {result['candidate_won_pairs']} of {result['pairs']} pairs"
    )


if __name__ == "__main__":
    main()
