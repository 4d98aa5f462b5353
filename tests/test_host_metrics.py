"""The host-wide merge of worker metric snapshots (``--workers``), without processes.

Snapshots are fed as Prometheus text; the merge is checked family by family
against its rule, the snapshot files against a temporary directory, and two
gateways in one process stand for two workers sharing a directory.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from rtgate.control import metrics as metrics_module
from rtgate.control.host_metrics import (
    MAX_SNAPSHOT_BYTES,
    Rule,
    Snapshot,
    SnapshotError,
    SnapshotHeader,
    WorkerSnapshots,
    merge,
    parse_snapshot,
    render_families,
    snapshot_text,
)
from rtgate.control.metrics import HOST_RULES, PrometheusMetrics
from rtgate.testing.gateway import open_gateway
from tests.test_faults_support import sessions_idle
from tests.test_ops_support import MASTER, http_get, parse_metrics, value
from tests.wsclient import connect, recv_json

AUTH = {"Authorization": f"Bearer {MASTER}"}


def worker_text(
    worker: str,
    *,
    started: float,
    active: float,
    ready: float = 1,
    failures: float = 0,
    ewma: float = 0.1,
    bucket: float = 1,
) -> str:
    return f"""# HELP rtgate_info rtgate build and worker
# TYPE rtgate_info gauge
rtgate_info{{version="1",worker="{worker}",pid="10{worker}"}} 1.0
# HELP rtgate_sessions_started_total Sessions accepted
# TYPE rtgate_sessions_started_total counter
rtgate_sessions_started_total{{model_group="m",deployment="dep-m"}} {started}
# HELP rtgate_sessions_active Sessions relaying now
# TYPE rtgate_sessions_active gauge
rtgate_sessions_active{{model_group="m",deployment="dep-m"}} {active}
# HELP rtgate_model_group_ready ready
# TYPE rtgate_model_group_ready gauge
rtgate_model_group_ready{{model_group="m"}} {ready}
# HELP rtgate_deployment_consecutive_failures failures
# TYPE rtgate_deployment_consecutive_failures gauge
rtgate_deployment_consecutive_failures{{deployment="dep-m"}} {failures}
# HELP rtgate_deployment_handshake_ewma_seconds ewma
# TYPE rtgate_deployment_handshake_ewma_seconds gauge
rtgate_deployment_handshake_ewma_seconds{{deployment="dep-m"}} {ewma}
# HELP rtgate_handshake_seconds handshake
# TYPE rtgate_handshake_seconds histogram
rtgate_handshake_seconds_bucket{{le="0.01"}} {bucket}
rtgate_handshake_seconds_bucket{{le="+Inf"}} {bucket + 1}
rtgate_handshake_seconds_sum {bucket / 10}
rtgate_handshake_seconds_count {bucket + 1}
"""


def families(text: str) -> list[Metric]:
    return list(text_string_to_metric_families(text))


def merged_samples(
    snapshots: list[Snapshot],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The merge, rendered as text and parsed back as a scrape would see it."""
    return parse_metrics(render_families(merge(snapshots, HOST_RULES)))


def test_counters_and_histograms_sum_over_every_worker_gauges_over_live_ones() -> None:
    snaps = [
        Snapshot("0", True, families(worker_text("0", started=5, active=2, failures=1, ewma=0.2))),
        Snapshot("1", True, families(worker_text("1", started=7, active=1, ready=0, bucket=3))),
        # Exited: its counters stay in the sum, its gauges (and its rtgate_info) do not.
        Snapshot("2", False, families(worker_text("2", started=4, active=9, failures=8))),
    ]
    m = merged_samples(snaps)
    assert value(m, "rtgate_sessions_started_total", model_group="m") == 16
    assert value(m, "rtgate_sessions_active", model_group="m") == 3
    assert value(m, "rtgate_handshake_seconds_bucket", le="0.01") == 1 + 3 + 1
    assert value(m, "rtgate_handshake_seconds_bucket", le="+Inf") == 2 + 4 + 2
    assert value(m, "rtgate_handshake_seconds_count") == 8
    assert value(m, "rtgate_handshake_seconds_sum") == pytest.approx(0.5)
    assert value(m, "rtgate_model_group_ready", model_group="m") == 0  # MIN: worker 1 is not
    assert value(m, "rtgate_deployment_consecutive_failures") == 1  # MAX of the live ones
    # PER_WORKER: one series per live worker, labelled; rtgate_info keeps its own label.
    ewma = {dict(k[1])["worker"]: v for k, v in m.items() if k[0].endswith("ewma_seconds")}
    assert ewma == {"0": 0.2, "1": 0.1}
    info = sorted(dict(k[1])["worker"] for k in m if k[0] == "rtgate_info")
    assert info == ["0", "1"]


def test_the_merge_is_the_same_whichever_worker_answers() -> None:
    spend = [
        families(
            f"# TYPE rtgate_spend_usd_total counter\n"
            f'rtgate_spend_usd_total{{key_alias="a",model_group="m"}} {v!r}\n'
        )
        for v in (0.1, 0.2, 0.30000000000000004)
    ]
    outs = set()
    for answering in range(3):
        snaps = [Snapshot(str(i), True, spend[i]) for i in range(3)]
        snaps.insert(0, snaps.pop(answering))  # the answering worker comes first
        outs.add(render_families(merge(snaps, HOST_RULES)))
    assert len(outs) == 1


def test_a_family_missing_from_the_table_sums_counters_and_labels_gauges() -> None:
    text = (
        "# TYPE x_new_total counter\nx_new_total 2\n# TYPE y_new gauge\ny_new 5\n"
        '# TYPE z_new histogram\nz_new_bucket{le="+Inf"} 1\nz_new_sum 1\nz_new_count 1\n'
    )
    m = merged_samples([Snapshot("0", True, families(text)), Snapshot("1", True, families(text))])
    assert m[("x_new_total", frozenset())] == 4
    assert m[("z_new_count", frozenset())] == 2
    assert m[("y_new", frozenset({("worker", "0")}))] == 5
    assert m[("y_new", frozenset({("worker", "1")}))] == 5


def test_the_table_decides_every_family_the_collector_renders() -> None:
    source = Path(metrics_module.__file__).read_text()
    table_start = source.index("HOST_RULES")
    table_end = source.index("class PrometheusMetrics")
    rendered = set(re.findall(r'"(rtgate_[a-z0-9_]+)"', source[table_end:]))
    assert rendered == set(HOST_RULES), "every family needs exactly one rule in HOST_RULES"
    assert table_start < table_end


async def test_counter_families_sum_and_gauge_families_do_not() -> None:
    with trio.fail_after(15):
        async with open_gateway(_yaml()) as gw:
            rendered = list(PrometheusMetrics().registry(gw.gateway).collect())
    assert rendered
    for family in rendered:
        rule = HOST_RULES[family.name]
        if family.type in ("counter", "histogram"):
            assert rule is Rule.SUM, family.name
        else:
            assert rule is not Rule.SUM, family.name


# -- snapshot files -----------------------------------------------------------------


def test_a_snapshot_file_round_trips_and_bad_ones_are_refused() -> None:
    header = SnapshotHeader("1", 4242, 1700000000.25)
    data = snapshot_text(header, families(worker_text("1", started=3, active=1)))
    got_header, got = parse_snapshot(data)
    assert got_header == header
    assert {f.name for f in got} >= {"rtgate_sessions_started", "rtgate_handshake_seconds"}
    for bad in (
        b"",
        b"rtgate_sessions_active 1\n",  # no header: not one of ours
        b"# rtgate worker snapshot worker=1 pid=x published_at=1\n",
        b"# rtgate worker snapshot worker=1 pid=1 published_at=1\nthis is { not prometheus\n",
        data[:-40] + b"{{{",  # cut short and garbled
        b"# rtgate worker snapshot worker=1 pid=1 published_at=1\n" + b"#" * MAX_SNAPSHOT_BYTES,
    ):
        with pytest.raises(SnapshotError):
            parse_snapshot(bad)


SNAPSHOT_HEAD = b"# rtgate worker snapshot worker=1 pid=1 published_at=1.0\n"
VALID_BODY = (
    b'# TYPE a_total counter\na_total{l="v"} 1.0\n'
    b'# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'
)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.text(alphabet='#a_{}="\\ \n0123456789.+-eInfNa,TYPEHLPcountergauge', max_size=200).map(
        str.encode
    ),
    st.integers(0, len(VALID_BODY)),
)
def test_a_damaged_snapshot_is_a_snapshot_error_never_another_one(junk: bytes, cut: int) -> None:
    try:
        parse_snapshot(SNAPSHOT_HEAD + VALID_BODY[:cut] + junk)
    except SnapshotError:
        pass


def _dir(tmp_path: Path, worker: str, now: list[float], dead: set[int] | None = None,
         pid: int | None = None) -> WorkerSnapshots:  # fmt: skip
    return WorkerSnapshots(
        str(tmp_path), worker, HOST_RULES, pid=pid or 100 + int(worker),
        clock=lambda: now[0], alive=lambda p: p not in (dead or set()),
    )  # fmt: skip


def test_peers_are_live_while_fresh_and_running_and_corrupt_files_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    dead: set[int] = set()
    w0, w1, w2 = (_dir(tmp_path, str(i), now, dead) for i in range(3))
    w1.publish(families(worker_text("1", started=2, active=1)), 1)
    w2.publish(families(worker_text("2", started=3, active=1)), 1)
    (tmp_path / "worker-9.prom").write_bytes(b"garbage")
    (tmp_path / "worker-8.prom.77.tmp").write_bytes(b"half written")  # not a snapshot name
    caplog.set_level(logging.WARNING, "rtgate.metrics")
    peers = {s.worker: s.live for s in w0.peers()}
    assert peers == {"1": True, "2": True}
    dead.add(102)  # worker 2's process is gone
    now[0] += 1
    assert {s.worker: s.live for s in w0.peers()} == {"1": True, "2": False}
    now[0] += 10  # worker 1 stopped publishing (stuck): its gauges are no longer current
    assert {s.worker: s.live for s in w0.peers()} == {"1": False, "2": False}
    assert caplog.text.count("worker-9.prom") == 1  # logged once, not per scrape


def test_a_restarted_worker_carries_on_its_predecessors_counters(tmp_path: Path) -> None:
    now = [1000.0]
    old = _dir(tmp_path, "1", now, pid=201)
    old.publish(families(worker_text("1", started=6, active=2)), 1)
    new = _dir(tmp_path, "1", now, pid=202)
    new.adopt_predecessor()
    own = new.own_view(families(worker_text("1", started=1, active=1)))
    new.publish(own, 1)
    _, published = parse_snapshot((tmp_path / "worker-1.prom").read_bytes())
    m = parse_metrics(render_families(published))
    assert value(m, "rtgate_sessions_started_total") == 7  # 6 before the restart, 1 since
    assert value(m, "rtgate_sessions_active") == 1  # only the running worker's sessions
    assert value(m, "rtgate_handshake_seconds_count") == 4
    (tmp_path / "worker-1.prom.202.9.tmp").write_bytes(b"cut short by a SIGKILL")
    again = _dir(tmp_path, "1", now, pid=202)  # the same process reading its own file
    again.adopt_predecessor()
    assert again.inherited == []
    assert _names(tmp_path) == ["worker-1.prom"]  # the unfinished write is cleared


def test_an_older_collection_never_replaces_a_newer_snapshot(tmp_path: Path) -> None:
    # The server's thread and a scrape on the loop both publish: the later collection wins.
    now = [1000.0]
    w = _dir(tmp_path, "0", now)
    assert w.publish(families(worker_text("0", started=9, active=0)), 2)
    assert not w.publish(families(worker_text("0", started=8, active=0)), 1)
    _, got = parse_snapshot((tmp_path / "worker-0.prom").read_bytes())
    assert value(parse_metrics(render_families(got)), "rtgate_sessions_started_total") == 9
    assert [p.name for p in tmp_path.iterdir()] == ["worker-0.prom"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.integers(0, 2),  # which worker
                st.floats(0, 1e6, allow_nan=False),  # how much its counter grows
                st.booleans(),  # whether it is live at this scrape
                st.booleans(),  # whether it is restarted (adopting its file) at this step
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=2,
        max_size=12,
    )
)
def test_host_counters_never_decrease_while_worker_counters_only_grow(
    steps: list[list[tuple[int, float, bool, bool]]],
) -> None:
    """Each worker's published counter only grows (a restart adopts its file): so does the sum."""
    published = dict.fromkeys(range(3), 0.0)
    live = dict.fromkeys(range(3), True)
    previous = -1.0
    for step in steps:
        for worker, growth, is_live, restarted in step:
            text = (
                f"# TYPE rtgate_tokens_total counter\nrtgate_tokens_total {published[worker]!r}\n"
            )
            if restarted:  # the new worker's own count starts at 0 on top of its inheritance
                inherited = merge([Snapshot(str(worker), False, families(text))], HOST_RULES)
                mine = families(
                    f"# TYPE rtgate_tokens_total counter\nrtgate_tokens_total {growth!r}\n"
                )
                folded = merge(
                    [Snapshot(str(worker), True, mine), Snapshot(str(worker), False, inherited)],
                    HOST_RULES,
                    label_workers=False,
                )
                published[worker] = folded[0].samples[0].value
            else:
                published[worker] += growth
            live[worker] = is_live
        snaps = [
            Snapshot(
                str(w),
                live[w],
                families(
                    f"# TYPE rtgate_tokens_total counter\nrtgate_tokens_total {published[w]!r}\n"
                ),
            )
            for w in range(3)
        ]
        total = merged_samples(snaps)[("rtgate_tokens_total", frozenset())]
        assert total >= previous
        previous = total


# -- two gateways in one process, one snapshot directory -----------------------------


def _yaml() -> str:
    return f"""
model_list:
  - model_name: m
    litellm_params:
      model: mock/echo
    model_info:
      id: dep-m
general_settings:
  master_key: {MASTER}
rtgate:
  limits:
    ping_interval: 0
"""


async def _sessions(port: int, count: int) -> None:
    for _ in range(count):
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime?model=m", AUTH) as ws:
            assert (await recv_json(ws))["type"] == "session.created"


async def test_either_gateway_answers_for_both(tmp_path: Path) -> None:
    with trio.fail_after(30):
        zero = PrometheusMetrics(worker="0", host_dir=str(tmp_path))
        one = PrometheusMetrics(worker="1", host_dir=str(tmp_path))
        async with (
            open_gateway(_yaml(), metrics=zero) as gw0,
            open_gateway(_yaml(), metrics=one) as gw1,
        ):
            await _sessions(gw0.port, 2)
            await _sessions(gw1.port, 3)
            await sessions_idle(gw0)
            await sessions_idle(gw1)
            _, alone = await http_get(gw1.port, "/metrics")  # gw1's own file is now current
            for port in (gw0.port, gw1.port, gw0.port):
                status, body = await http_get(port, "/metrics")
                assert status == 200
                m = parse_metrics(body)
                assert value(m, "rtgate_sessions_started_total", model_group="m") == 5
                assert value(m, "rtgate_sessions_active") == 0
                assert sorted(dict(k[1])["worker"] for k in m if k[0] == "rtgate_info") == [
                    "0",
                    "1",
                ]
            _, own = await http_get(gw1.port, "/metrics?worker=self")
    assert value(parse_metrics(alone), "rtgate_sessions_started_total") >= 3
    mine = parse_metrics(own)  # ?worker=self: the answering worker only
    assert value(mine, "rtgate_sessions_started_total") == 3
    assert [dict(k[1])["worker"] for k in mine if k[0] == "rtgate_info"] == ["1"]
    assert _names(tmp_path) == ["worker-0.prom", "worker-1.prom"]  # no temporary file left


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_without_a_snapshot_directory_a_scrape_is_the_process_alone(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_gateway(_yaml()) as gw:
            await _sessions(gw.port, 1)
            _, body = await http_get(gw.port, "/metrics")
    assert b"rtgate worker snapshot" not in body
    assert value(parse_metrics(body), "rtgate_sessions_started_total") == 1


def test_operations_doc_lists_every_gauge_under_its_rule() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    rows = {
        Rule.SUM_LIVE: "| summed over live workers |",
        Rule.MAX: "| highest value of the live workers |",
        Rule.MIN: "| lowest value of the live workers |",
        Rule.PER_WORKER: "| one series per live worker, labelled `worker` |",
    }
    for rule, start in rows.items():
        row = next(line for line in doc.splitlines() if line.startswith(start))
        named = set(re.findall(r"`(rtgate_[a-z0-9_]+)", row))
        assert named == {name for name, r in HOST_RULES.items() if r is rule}, rule


async def test_a_scrape_is_answered_when_the_snapshot_directory_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(15):
        renderer = PrometheusMetrics(worker="0", host_dir=str(tmp_path / "removed"))
        async with open_gateway(_yaml(), metrics=renderer) as gw:
            await _sessions(gw.port, 1)
            for _ in range(2):
                status, body = await http_get(gw.port, "/metrics")
                assert status == 200
                assert value(parse_metrics(body), "rtgate_sessions_started_total") == 1
    assert caplog.text.count("cannot write this worker's metrics snapshot") == 1
