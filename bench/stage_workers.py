"""The ``workers`` stage: saturation throughput of ``rtgate serve --workers N`` against one worker.

Owns: the core layouts a worker count can be measured in (dedicated,
co-located), the multi-deployment config and the pinned ``--workers N``
process, synchronised load from several generator processes with per-worker
CPU and session counts over one window, the ramp and why it stops, and the
scaling comparison (:func:`scaling`, pure).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.plan import GENERATOR_LATE_MS, P99_BUDGET_MS, TARGETS, Plan
from bench.procs import (
    PYTHON,
    ROOT,
    children,
    core_list,
    core_ticks,
    cpu_count,
    established_sessions,
    fake_upstream,
    free_port,
    openai_deployment,
    pin,
    pin_threads,
    process,
    rtgate_serve,
    sleep_until,
    wait_port,
)

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
    deployments = "".join(openai_deployment(port) for port in upstream_ports)
    return f"model_list:\n{deployments}rtgate:\n  host: 127.0.0.1\n  log_level: warning\n"


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
    argv = [*pin(core_list(cores)), *rtgate_serve(config, port, "--workers", str(count))]
    with process(argv, log=workdir / f"rtgate-workers-{count}.log") as proc:
        wait_port(port, proc=proc)
        if count == 1:
            workers, supervisor = [proc.pid], []
        else:
            deadline = time.monotonic() + 30
            while len(children(proc.pid)) < count:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"--workers {count}: workers did not start")
                time.sleep(0.05)
            workers, supervisor = children(proc.pid), [proc.pid]
        if cpu_count() > 1:
            for i, pid in enumerate(workers):
                pin_threads(pid, cores[i % len(cores)])
        yield port, workers, supervisor


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
                *pin(str(core)),
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
        sleep_until(window_from)
        cpu0 = [loadgen.cpu_seconds([pid]) for pid in workers]
        sup0 = loadgen.cpu_seconds(supervisor) if supervisor else 0.0
        up0 = loadgen.cpu_seconds(upstreams)
        ticks0 = core_ticks(worker_cores), core_ticks(load_cores)
        sleep_until((window_from + window_to) // 2)
        held = [established_sessions(pid, port) for pid in workers]
        sleep_until(window_to)
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
    cores = cpu_count()
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
        if cpu_count() > 1:  # this process only reads /proc during a run; it counts as load
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
