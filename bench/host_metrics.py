"""What host-wide ``/metrics`` (``--workers``) costs a worker: its snapshot and a scrape.

Starts rtgate in this process on the mock model with 1, 20 and 100 deployments,
publishing into a temporary snapshot directory as worker 0 beside a second
worker's snapshot, and reports per size: the snapshot's bytes, the CPU the
collection takes on the event loop (what a session waits for), the CPU of a
whole publish (collection, text, write: once a second per worker), and the CPU
of a scrape answered for both workers.

    .venv/bin/python bench/host_metrics.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import trio

from rtgate.control.metrics import PrometheusMetrics
from rtgate.testing.gateway import open_gateway


def config(deployments: int) -> str:
    entries = "\n".join(
        f"""  - model_name: m{i % 5}
    litellm_params:
      model: mock/echo
    model_info:
      id: dep-{i}"""
        for i in range(deployments)
    )
    return f"""model_list:
{entries}
general_settings:
  master_key: sk-bench-host-metrics-0000
rtgate:
  limits:
    ping_interval: 0
"""


async def measure(deployments: int, repeat: int) -> str:
    directory = tempfile.mkdtemp(prefix="rtgate-bench-metrics-")
    mine = PrometheusMetrics(worker="0", host_dir=directory)
    peer = PrometheusMetrics(worker="1", host_dir=directory)
    async with open_gateway(config(deployments), metrics=mine) as gw:
        gateway = gw.gateway
        peer.write_snapshot(*peer.collect_for_publishing(gateway))
        started = time.process_time()
        for _ in range(repeat):
            mine.collect_for_publishing(gateway)
        on_loop = (time.process_time() - started) / repeat
        started = time.process_time()
        for _ in range(repeat):
            mine.write_snapshot(*mine.collect_for_publishing(gateway))
        publish = (time.process_time() - started) / repeat
        scrapes = max(1, repeat // 4)
        started = time.process_time()
        for _ in range(scrapes):
            mine(gateway)
        scrape = (time.process_time() - started) / scrapes
    size = _size(os.path.join(directory, "worker-0.prom"))
    return (
        f"| {deployments} | {size / 1024:.0f} KiB | {on_loop * 1e3:.2f} ms "
        f"| {publish * 1e3:.2f} ms | {scrape * 1e3:.1f} ms |"
    )


def _size(path: str) -> int:
    return os.path.getsize(path)


async def main(repeat: int) -> None:
    print("| deployments | snapshot | collection (loop) | publish (total) | scrape of 2 workers |")
    print("|---|---|---|---|---|")
    for deployments in (1, 20, 100):
        print(await measure(deployments, repeat))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("RTGATE_STATE_DIR", tempfile.mkdtemp(prefix="rtgate-bench-state-"))
    trio.run(main, args.repeat)
