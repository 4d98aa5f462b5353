"""Time from connect to ``session.created``: direct, through rtgate, through a warm pool.

The fast bench fake upstream (``bench/fake_upstream.py``) answers every upgrade
``--handshake-delay`` seconds late (0.3 s: a far provider's TCP + TLS + upgrade).
One rtgate process (pinned like :mod:`bench.procs` pins it) serves two model
groups on that slow fake: ``cold`` dials per session, ``warm`` has a
``warm_pool``. Sequential sessions, each closed before the next, are timed
from the start of the TCP connect to the arrival of ``session.created``:

* ``local``: straight to a second fake with no handshake delay (the reference a
  warm session should be within 5 ms of);
* ``direct_slow``: straight to the slow fake;
* ``rtgate_cold`` and ``rtgate_warm``: through rtgate.

Warm sessions arrive ``PACE`` seconds apart so the pool (size ``WARM_SIZE``)
keeps up; the hand-outs and misses rtgate counted are reported with them.
``measure(quick)`` returns the numbers (``bench/run_all.py``'s ``warmstart`` stage); ``python -m bench.warmstart [--quick]``
also prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.sync.client import connect

from bench.procs import LOAD_CORE, PROXY_CORE, PYTHON, free_port, pin, process, wait_port

HANDSHAKE_DELAY = 0.3
WARM_SIZE = 4
PACE = 0.15
"""Seconds between warm sessions (the pool refills one connection per handshake)."""
KEY = "sk-bench-master-key"


@contextlib.contextmanager
def fake(workdir: Path, delay: float) -> Iterator[int]:
    port = free_port()
    argv = [*pin(LOAD_CORE), PYTHON, "-m", "bench.fake_upstream", "--port", str(port),
            "--handshake-delay", str(delay)]  # fmt: skip
    with process(argv, log=workdir / f"fake_{delay:g}.log") as proc:
        wait_port(port, proc=proc)
        yield port


def config(upstream_port: int) -> str:
    base = f"ws://127.0.0.1:{upstream_port}/v1"
    return f"""\
model_list:
  - model_name: cold
    litellm_params:
      model: openai/gpt-realtime
      api_base: {base}
      api_key: sk-bench-not-a-real-key
    model_info: {{mode: realtime, id: cold}}
  - model_name: warm
    litellm_params:
      model: openai/gpt-realtime
      api_base: {base}
      api_key: sk-bench-not-a-real-key
      warm_pool: {{size: {WARM_SIZE}, max_idle_seconds: 120}}
    model_info: {{mode: realtime, id: warm}}
general_settings:
  master_key: {KEY}
rtgate:
  host: 127.0.0.1
  log_level: warning
"""


@contextlib.contextmanager
def rtgate(workdir: Path, upstream_port: int) -> Iterator[int]:
    path = workdir / "warmstart.yaml"
    path.write_text(config(upstream_port))
    path.chmod(0o600)
    port = free_port()
    argv = [*pin(PROXY_CORE), PYTHON, "-m", "rtgate", "serve", "-c", str(path),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with process(argv, log=workdir / "rtgate.log") as proc:
        wait_port(port, proc=proc)
        yield port


def time_to_created(url: str, headers: dict[str, str] | None = None) -> float:
    """Seconds from connect to the first event, which must be ``session.created``."""
    started = time.perf_counter()
    with connect(url, additional_headers=headers, open_timeout=10, compression=None) as ws:
        first = ws.recv(timeout=10)
        took = time.perf_counter() - started
    event = json.loads(first)
    assert event.get("type") == "session.created", event
    return took


def series(url: str, n: int, pace: float, headers: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(n):
        out.append(time_to_created(url, headers))
        time.sleep(pace)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(p99, 2),
            "max_ms": round(ms[-1], 2)}  # fmt: skip


def warm_counters(port: int) -> dict[str, int]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts = {"handouts": 0, "misses": 0}
    for line in text.splitlines():
        if line.startswith("rtgate_warm_handouts_total{"):
            counts["handouts"] += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("rtgate_warm_misses_total{"):
            counts["misses"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def measure(
    quick: bool, *, sessions: int | None = None, handshake_delay: float | None = None
) -> dict[str, Any]:
    """Run every target; p50/p99 milliseconds to ``session.created`` per target.

    ``sessions`` (per target; default 10 quick, 50 full) and ``handshake_delay``
    (default ``HANDSHAKE_DELAY``) shrink the run further for the smoke test.
    """
    n = sessions if sessions is not None else 10 if quick else 50
    delay = handshake_delay if handshake_delay is not None else HANDSHAKE_DELAY
    auth = {"Authorization": f"Bearer {KEY}"}
    results: dict[str, Any] = {"handshake_delay_s": delay, "sessions": n,
                               "warm_size": WARM_SIZE, "warm_pace_s": PACE}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rtgate-warmstart-") as tmp:
        workdir = Path(tmp)
        with fake(workdir, 0.0) as local_port, fake(workdir, delay) as slow_port:
            results["local"] = summary(series(f"ws://127.0.0.1:{local_port}/v1/realtime", n, 0))
            slow = f"ws://127.0.0.1:{slow_port}/v1/realtime"
            results["direct_slow"] = summary(series(slow, n, 0))
            with rtgate(workdir, slow_port) as port:
                url = f"ws://127.0.0.1:{port}/v1/realtime?model="
                time_to_created(url + "cold", auth)  # first use: imports, caches
                results["rtgate_cold"] = summary(series(url + "cold", n, 0, auth))
                time.sleep(delay * 3)  # the warm pool has filled
                results["rtgate_warm"] = summary(series(url + "warm", n, PACE, auth))
                results["warm_counters"] = warm_counters(port)
    local_p50 = results["local"]["p50_ms"]
    results["warm_minus_local_p50_ms"] = round(results["rtgate_warm"]["p50_ms"] - local_p50, 2)
    results["warm_minus_local_p99_ms"] = round(
        results["rtgate_warm"]["p99_ms"] - results["local"]["p99_ms"], 2
    )
    return results


def markdown(results: dict[str, Any]) -> str:
    rows = [
        ("local fake, no handshake delay (reference)", "local"),
        (f"direct to the slow fake ({results['handshake_delay_s']:g} s handshake)", "direct_slow"),
        ("rtgate, fresh dial per session", "rtgate_cold"),
        (f"rtgate, warm_pool size {results['warm_size']} "
         f"(one session per {results['warm_pace_s']:g} s)", "rtgate_warm"),
    ]  # fmt: skip
    lines = [
        "| connect to session.created | n | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for label, key in rows:
        r = results[key]
        lines.append(f"| {label} | {r['n']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    counters = results.get("warm_counters", {})
    lines.append("")
    lines.append(
        f"Warm minus local: p50 {results['warm_minus_local_p50_ms']} ms, "
        f"p99 {results['warm_minus_local_p99_ms']} ms; warm hand-outs {counters.get('handouts')}, "
        f"misses {counters.get('misses')}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw dict as JSON too")
    args = parser.parse_args()
    results = measure(args.quick)
    print(markdown(results))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
