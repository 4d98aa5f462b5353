"""Prometheus metrics of one gateway process, rendered at scrape time.

The hot path never touches a prometheus object: the gateway and the relay
bump plain integers (:class:`RelayCounters`, :class:`LatencyHistogram`, the
dicts of :class:`rtgate.session.gateway.GatewayCounters`) and a custom collector turns
them, the pool's statistics and the event log's counters into metric families
when ``/metrics`` is scraped. Each renderer has its own ``CollectorRegistry``
(never the global one), so a test may run several gateways in one process.

No label ever carries a key: labels are model groups, deployment ids, provider
names, fixed reason words, close codes and the worker number.

Under ``rtgate serve --workers N`` a scrape answers for the whole host: the
answering worker merges its own families with its peers' snapshots
(:mod:`rtgate.control.host_metrics`) by the rules of :data:`HOST_RULES`.
Alone (no supervisor) a process renders only its own families, as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from rtgate.control.host_metrics import (
    HOST_METRICS_DIR_ENV,
    Rule,
    Snapshot,
    WorkerSnapshots,
    render_families,
)
from rtgate.control.host_metrics import merge as merge_workers
from rtgate.session.counters import RELAY_SAMPLE_MASK, LatencyHistogram, RelayCounters

if TYPE_CHECKING:
    from rtgate.session.gateway import Gateway
    from rtgate.telemetry.tap import ServedEventLog


log = logging.getLogger("rtgate.metrics")

HOST_RULES: Mapping[str, Rule] = {
    # How each family of every worker becomes the host's (``--workers``). Counters and
    # histograms are summed over every worker that ran, so they stay monotonic when one
    # dies; gauges come from live workers only.
    "rtgate_info": Rule.PER_WORKER,  # one series per live worker (it has worker and pid)
    "rtgate_draining": Rule.MAX,  # 1 while any worker drains
    "rtgate_config_reloads": Rule.SUM,  # each worker counts its own reload of one SIGHUP
    "rtgate_sessions_active": Rule.SUM_LIVE,
    "rtgate_webrtc_calls_active": Rule.SUM_LIVE,
    "rtgate_sessions_started": Rule.SUM,
    "rtgate_sessions": Rule.SUM,
    "rtgate_close_codes": Rule.SUM,
    "rtgate_handshake_seconds": Rule.SUM,
    "rtgate_upstream_dial_seconds": Rule.SUM,
    "rtgate_handshakes_rejected": Rule.SUM,
    "rtgate_upstream_connect_failures": Rule.SUM,
    "rtgate_relayed_messages": Rule.SUM,
    "rtgate_relayed_bytes": Rule.SUM,
    "rtgate_limit_closes": Rule.SUM,
    "rtgate_relay_latency_seconds": Rule.SUM,
    "rtgate_deployment_active_sessions": Rule.SUM_LIVE,  # each worker's pool holds its own
    # Health is shared through the host's store, so workers agree within one lease renewal;
    # until then a deployment shows in every state some worker sees it in.
    "rtgate_deployment_state": Rule.MAX,
    "rtgate_deployment_cooldown_remaining_seconds": Rule.MAX,
    "rtgate_deployment_consecutive_failures": Rule.MAX,
    "rtgate_deployment_ejections": Rule.SUM,  # each decided by one worker (adopting is not one)
    "rtgate_deployment_handshake_ewma_seconds": Rule.PER_WORKER,  # each worker's own dials
    "rtgate_model_group_ready": Rule.MIN,  # ready for the host when every worker can serve it
    "rtgate_warm_idle_connections": Rule.SUM_LIVE,  # warm pools are per worker
    "rtgate_warm_handouts": Rule.SUM,
    "rtgate_warm_misses": Rule.SUM,
    "rtgate_warm_discards": Rule.SUM,
    "rtgate_warm_dials": Rule.SUM,
    "rtgate_eventlog_records": Rule.SUM,
    "rtgate_eventlog_dropped": Rule.SUM,
    "rtgate_eventlog_queued": Rule.SUM_LIVE,
    "rtgate_eventlog_sink_records": Rule.SUM,
    "rtgate_eventlog_sink_down": Rule.MAX,  # 1 while the sink is down for any worker
    "rtgate_shared_state_up": Rule.MIN,  # 0 while any worker cannot reach the store
    "rtgate_shared_state_members": Rule.MAX,  # the store's count; the freshest is the highest
    "rtgate_buffered_bytes": Rule.SUM_LIVE,
    "rtgate_buffered_messages_unfinished": Rule.SUM_LIVE,
    "rtgate_spend_usd": Rule.SUM,
    "rtgate_tokens": Rule.SUM,
    "rtgate_deployment_spend_usd": Rule.SUM,
    "rtgate_deployment_tokens": Rule.SUM,
    # Read from the spend database (every host's spend): each worker knows it alike, so the
    # freshest is the highest (its own unwritten spend makes each worker's a little higher).
    "rtgate_key_spend_usd": Rule.MAX,
    "rtgate_key_max_budget_usd": Rule.MAX,
    "rtgate_database_up": Rule.MIN,
    "rtgate_spend_buffered_records": Rule.SUM_LIVE,
    "rtgate_time_to_first_audio_seconds": Rule.SUM,
    "rtgate_session_closes": Rule.SUM,
    "rtgate_trace_spans": Rule.SUM,
    "rtgate_trace_queue_spans": Rule.SUM_LIVE,
}


class PrometheusMetrics:
    """The ``MetricsRenderer`` of the control plane: ``renderer(gateway) -> (body, content type)``.

    With ``host_dir`` (default: ``$RTGATE_HOST_METRICS_DIR``, which the supervisor sets)
    it answers for every worker of the host; the server writes this worker's snapshot
    there about once a second (:meth:`collect_for_publishing`, :meth:`write_snapshot`).
    """

    def __init__(self, worker: str | None = None, host_dir: str | None = None) -> None:
        self.worker = worker if worker is not None else os.environ.get("RTGATE_WORKER_ID", "0")
        self._registries: dict[int, tuple[Gateway, GatewayCollector, CollectorRegistry]] = {}
        host_dir = host_dir if host_dir is not None else os.environ.get(HOST_METRICS_DIR_ENV)
        self.host: WorkerSnapshots | None = None
        self._collections = 0
        self._publish_failed = False
        if host_dir:
            self.host = WorkerSnapshots(host_dir, self.worker, HOST_RULES)
            self.host.adopt_predecessor()  # before any scrape can be answered

    def _entry(self, gateway: Gateway) -> tuple[Gateway, GatewayCollector, CollectorRegistry]:
        entry = self._registries.get(id(gateway))
        if entry is None or entry[0] is not gateway:
            collector = GatewayCollector(gateway, self.worker)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector)
            entry = (gateway, collector, registry)
            self._registries[id(gateway)] = entry
        return entry

    def registry(self, gateway: Gateway) -> CollectorRegistry:
        return self._entry(gateway)[2]

    def collect_for_publishing(self, gateway: Gateway) -> tuple[list[Metric], int]:
        """On the event loop: this worker's families now, and their sequence number."""
        self._collections += 1
        return list(self._entry(gateway)[1].collect()), self._collections

    def write_snapshot(self, families: Sequence[Metric], sequence: int) -> Sequence[Metric]:
        """Any thread: add the predecessors' counters and write the snapshot; what was written."""
        assert self.host is not None
        own = self.host.own_view(families)
        self.host.publish(own, sequence)
        return own

    def __call__(self, gateway: Gateway) -> tuple[bytes, str]:
        if self.host is None:
            return generate_latest(self.registry(gateway)), CONTENT_TYPE_LATEST
        return self._host_answer(*self.collect_for_publishing(gateway))

    async def answer(self, gateway: Gateway, *, own_only: bool = False) -> tuple[bytes, str]:
        """What the control app serves: ``own_only`` is ``/metrics?worker=self``.

        For the host, only the collection runs on the event loop (it reads live
        counters); the snapshot, the peers' files, the merge and the text run on a
        thread, so a scrape does not hold up this worker's sessions.
        """
        if self.host is None or own_only:
            return generate_latest(self.registry(gateway)), CONTENT_TYPE_LATEST
        import trio

        families, sequence = self.collect_for_publishing(gateway)
        return await trio.to_thread.run_sync(self._host_answer, families, sequence)

    def _host_answer(self, families: Sequence[Metric], sequence: int) -> tuple[bytes, str]:
        assert self.host is not None
        # Published first: whatever this scrape reports is on disk, so a worker killed
        # right after answering cannot take counts back from the next scrape.
        try:
            own = self.write_snapshot(families, sequence)
            self._publish_failed = False
        except OSError as exc:  # the runtime directory is gone or full: answer anyway
            if not self._publish_failed:
                log.warning("cannot write this worker's metrics snapshot: %s", exc)
            self._publish_failed = True
            own = self.host.own_view(families)
        snapshots = [Snapshot(self.worker, True, own), *self.host.peers()]
        return render_families(merge_workers(snapshots, HOST_RULES)), CONTENT_TYPE_LATEST


def render(gateway: Gateway) -> tuple[bytes, str]:
    """One-shot rendering (a fresh registry each call)."""
    return PrometheusMetrics()(gateway)


class GatewayCollector(Collector):
    """Reads a gateway's counters, pool and event log at scrape time."""

    def __init__(self, gateway: Gateway, worker: str) -> None:
        self.gateway = gateway
        self.worker = worker

    def collect(self) -> Iterable[Metric]:
        import trio

        gateway = self.gateway
        counters = gateway.counters
        try:
            now = trio.current_time()
        except RuntimeError:  # rendered outside trio (a unit test): the pool's clock is moot
            now = 0.0
        yield from self._info(gateway)
        yield from _sessions(counters)
        yield from _calls(gateway)
        yield from _handshakes(counters)
        yield from _relay(counters.relay)
        yield from _pool(gateway.pool.statistics(now))
        yield from _readiness(gateway.pool.readiness(now))
        yield from _warm(gateway.warm)
        yield from _event_log(gateway.event_log)
        yield from _shared_state(gateway)
        yield from _buffers(gateway)
        yield from _spend(gateway.governance)
        yield from _turns_and_closes(counters)
        yield from _tracing(gateway.tracing)

    def _info(self, gateway: Gateway) -> Iterator[Metric]:
        from rtgate import __version__

        info = GaugeMetricFamily(
            "rtgate_info", "rtgate build and worker", labels=["version", "worker", "pid"]
        )
        info.add_metric([__version__, self.worker, str(os.getpid())], 1)
        yield info
        yield GaugeMetricFamily(
            "rtgate_draining",
            "1 while the gateway drains for shutdown",
            value=int(gateway.draining),
        )
        reloads = CounterMetricFamily(
            "rtgate_config_reloads", "Configuration reloads by result", labels=["result"]
        )
        for result in ("ok", "error"):
            reloads.add_metric([result], gateway.counters.reloads.get(result, 0))
        yield reloads


def _shared_state(gateway: Gateway) -> Iterator[Metric]:
    """Only when a store is configured (``--workers``, Redis)."""
    shared = gateway.admission.shared
    if shared is None:
        return
    up = GaugeMetricFamily(
        "rtgate_shared_state_up",
        "1 while the shared state store (host: SQLite, redis) answers; 0 during an outage",
        labels=["store"],
    )
    up.add_metric([shared.kind], int(shared.up))
    yield up
    yield GaugeMetricFamily(
        "rtgate_shared_state_members",
        "rtgate processes sharing the store, as it last counted them",
        value=shared.members,
    )


def _calls(gateway: Gateway) -> Iterator[Metric]:
    calls = GaugeMetricFamily(
        "rtgate_webrtc_calls_active",
        "WebRTC calls running (each is also a session), by who terminates the media",
        labels=["media"],
    )
    for media, n in sorted(gateway.calls.active_by_media().items()):
        calls.add_metric([media], n)
    yield calls


def _sessions(counters: Any) -> Iterator[Metric]:
    labels = ["model_group", "deployment"]
    active = GaugeMetricFamily("rtgate_sessions_active", "Sessions relaying now", labels=labels)
    started = CounterMetricFamily("rtgate_sessions_started", "Sessions accepted", labels=labels)
    ended: dict[tuple[str, str], int] = {}
    for (group, dep, _outcome), n in counters.sessions_ended.items():
        ended[(group, dep)] = ended.get((group, dep), 0) + n
    for key, n in sorted(counters.sessions_started.items()):
        started.add_metric(list(key), n)
        active.add_metric(list(key), n - ended.get(key, 0))
    yield active
    yield started
    total = CounterMetricFamily(
        "rtgate_sessions",
        "Sessions ended, by who ended them (client, upstream, gateway, error)",
        labels=[*labels, "outcome"],
    )
    for key3, n in sorted(counters.sessions_ended.items()):
        total.add_metric(list(key3), n)
    yield total
    codes = CounterMetricFamily(
        "rtgate_close_codes", "Close codes sent to clients", labels=["code"]
    )
    for code, n in sorted(counters.close_codes.items()):
        codes.add_metric([str(code)], n)
    yield codes


def _handshakes(counters: Any) -> Iterator[Metric]:
    yield _histogram(
        "rtgate_handshake_seconds",
        "Client-visible handshake time: request head read to upgrade answered (accepted sessions)",
        counters.handshake_seconds,
    )
    yield _histogram(
        "rtgate_upstream_dial_seconds",
        "Time to open one upstream connection that succeeded",
        counters.dial_seconds,
    )
    rejected = CounterMetricFamily(
        "rtgate_handshakes_rejected",
        "Client handshakes answered with an HTTP error",
        labels=["status"],
    )
    for status, n in sorted(counters.handshakes_rejected.items()):
        rejected.add_metric([str(status)], n)
    yield rejected
    failures = CounterMetricFamily(
        "rtgate_upstream_connect_failures",
        "Failed upstream dials by class (timeout, refused, auth, rate_limited, ...)",
        labels=["kind"],
    )
    for kind, n in sorted(counters.dial_failures.items()):
        failures.add_metric([kind], n)
    yield failures


def _relay(relay: RelayCounters) -> Iterator[Metric]:
    messages = CounterMetricFamily(
        "rtgate_relayed_messages", "WebSocket messages by direction", labels=["direction"]
    )
    size = CounterMetricFamily(
        "rtgate_relayed_bytes", "Message payload bytes by direction", labels=["direction"]
    )
    for direction in sorted(relay.messages):
        messages.add_metric([direction], relay.messages[direction])
        size.add_metric([direction], relay.bytes.get(direction, 0))
    yield messages
    yield size
    limits = CounterMetricFamily(
        "rtgate_limit_closes",
        "Sessions ended by a limit or the gateway (idle_timeout, session_expired, ...)",
        labels=["limit"],
    )
    for reason, n in sorted(relay.limit_closes.items()):
        limits.add_metric([reason], n)
    yield limits
    yield _histogram(
        "rtgate_relay_latency_seconds",
        f"Time from a read to its relayed write (1 batch in {RELAY_SAMPLE_MASK + 1})",
        relay.latency,
    )


_STATES = ("closed", "standby", "ejected", "half-open")


def _pool(stats: Mapping[str, Any]) -> Iterator[Metric]:
    labels = ["model_group", "deployment", "provider"]
    active = GaugeMetricFamily(
        "rtgate_deployment_active_sessions",
        "Sessions (and dials) held per deployment",
        labels=labels,
    )
    state = GaugeMetricFamily(
        "rtgate_deployment_state", "1 for the deployment's current health state",
        labels=[*labels, "state"],
    )  # fmt: skip
    cooldown = GaugeMetricFamily(
        "rtgate_deployment_cooldown_remaining_seconds", "Seconds of cooldown left", labels=labels
    )
    failures = GaugeMetricFamily(
        "rtgate_deployment_consecutive_failures", "Connect failures in a row", labels=labels
    )
    ejections = CounterMetricFamily(
        "rtgate_deployment_ejections", "Cooldown ejections since start", labels=labels
    )
    ewma = GaugeMetricFamily(
        "rtgate_deployment_handshake_ewma_seconds", "Smoothed upstream handshake time",
        labels=labels,
    )  # fmt: skip
    for dep_id, raw in sorted(stats.items()):
        s = dict(raw)
        values = [str(s.get("model_name", "")), dep_id, str(s.get("provider", ""))]
        active.add_metric(values, float(s.get("active_sessions") or 0))
        current = str(s.get("state", ""))
        for name in dict.fromkeys((*_STATES, current)):
            state.add_metric([*values, name], 1 if name == current else 0)
        cooldown.add_metric(values, float(s.get("cooldown_remaining") or 0))
        failures.add_metric(values, float(s.get("consecutive_failures") or 0))
        ejections.add_metric(values, float(s.get("ejections") or 0))
        if s.get("handshake_latency_ewma") is not None:
            ewma.add_metric(values, float(s["handshake_latency_ewma"]))
    yield from (active, state, cooldown, failures, ejections, ewma)


def _warm(warm: Any) -> Iterator[Metric]:
    """Warm pools (``litellm_params.warm_pool``): idle connections, hand-outs, misses, discards."""
    if warm is None:
        return
    labels = ["model_group", "deployment"]
    idle = GaugeMetricFamily(
        "rtgate_warm_idle_connections", "Pre-opened upstream connections waiting for a session",
        labels=labels,
    )  # fmt: skip
    for dep_id, (group, n) in sorted(warm.idle_counts().items()):
        idle.add_metric([group, dep_id], n)
    yield idle
    counters = warm.counters
    handouts = CounterMetricFamily(
        "rtgate_warm_handouts", "Sessions that took a warm connection", labels=["deployment"]
    )
    for dep_id, n in sorted(counters.handouts.items()):
        handouts.add_metric([dep_id], n)
    yield handouts
    for name, doc, label, counts in (
        ("rtgate_warm_misses", "Sessions of a warm deployment that dialed fresh, by reason",
         "reason", counters.misses),
        ("rtgate_warm_discards", "Warm connections closed unused, by reason", "reason",
         counters.discards),
        ("rtgate_warm_dials", "Warm dials by result", "result", counters.dials),
    ):  # fmt: skip
        family = CounterMetricFamily(name, doc, labels=["deployment", label])
        for key, n in sorted(counts.items()):
            family.add_metric(list(key), n)
        yield family


def _event_log(event_log: ServedEventLog | None) -> Iterator[Metric]:
    """Event log counters (none without an event log)."""
    snap: Mapping[str, Any] = event_log.snapshot() if event_log is not None else {}
    records = CounterMetricFamily(
        "rtgate_eventlog_records", "Event log records by stage", labels=["stage"]
    )
    for stage in ("events_seen", "events_queued", "sessions_queued", "records_written"):
        if isinstance(snap.get(stage), int):
            records.add_metric([stage.removeprefix("events_")], snap[stage])
    yield records
    dropped = CounterMetricFamily(
        "rtgate_eventlog_dropped", "Event log records dropped before the sinks", labels=["reason"]
    )
    for reason, n in sorted(dict(snap.get("dropped") or {}).items()):
        dropped.add_metric([str(reason)], n)
    if isinstance(snap.get("sessions_dropped"), int):
        dropped.add_metric(["session_record"], snap["sessions_dropped"])
    yield dropped
    queued = GaugeMetricFamily("rtgate_eventlog_queued", "Event records waiting for the writer")
    if isinstance(snap.get("queued"), int):
        queued.add_metric([], snap["queued"])
    yield queued
    sink_records = CounterMetricFamily(
        "rtgate_eventlog_sink_records", "Records per sink by outcome", labels=["sink", "outcome"]
    )
    sink_down = GaugeMetricFamily(
        "rtgate_eventlog_sink_down", "1 while a sink is down", labels=["sink"]
    )
    for name, raw in sorted(dict(snap.get("sinks") or {}).items()):
        sink = dict(raw)
        for outcome in ("written", "spooled", "replayed"):
            if isinstance(sink.get(outcome), int):
                sink_records.add_metric([str(name), outcome], sink[outcome])
        drops = sink.get("dropped")
        if isinstance(drops, Mapping):
            sink_records.add_metric([str(name), "dropped"], sum(drops.values()))
        elif isinstance(drops, int):
            sink_records.add_metric([str(name), "dropped"], drops)
        sink_down.add_metric([str(name)], int(bool(sink.get("down"))))
    yield sink_records
    yield sink_down


def _buffers(gateway: Gateway) -> Iterator[Metric]:
    budget = gateway.buffers
    yield GaugeMetricFamily(
        "rtgate_buffered_bytes",
        "Bytes held now in unfinished client messages and batches waiting for their write",
        value=budget.held,
    )
    yield GaugeMetricFamily(
        "rtgate_buffered_messages_unfinished",
        "Client connections holding an unfinished message now",
        value=len(budget.holders),
    )


def _readiness(groups: Mapping[str, bool]) -> Iterator[Metric]:
    ready = GaugeMetricFamily(
        "rtgate_model_group_ready",
        "1 while the model group has a deployment that can take a session (what readiness checks)",
        labels=["model_group"],
    )
    for group, ok in sorted(groups.items()):
        ready.add_metric([group], int(ok))
    yield ready


def _turns_and_closes(counters: Any) -> Iterator[Metric]:
    """Time to first audio per model group; ended sessions by close code and closing side."""
    ttfa = HistogramMetricFamily(
        "rtgate_time_to_first_audio_seconds",
        "A response's start (end of user speech, commit, or response.created) to its first audio delta",
        labels=["model_group"],
    )
    for group, hist in sorted(counters.first_audio_seconds.items()):
        ttfa.add_metric([group], hist.cumulative(), hist.sum)
    yield ttfa
    closes = CounterMetricFamily(
        "rtgate_session_closes",
        "Ended sessions by the close code sent to the client and the side that closed",
        labels=["model_group", "code", "side"],
    )
    for (group, code, side), n in sorted(counters.session_closes.items()):
        closes.add_metric([group, str(code), side], n)
    yield closes


def _tracing(tracing: Any) -> Iterator[Metric]:
    """Span export per exporter (``otel``, ``langfuse``): exported, dropped, failed, queued."""
    spans = CounterMetricFamily(
        "rtgate_trace_spans",
        "Finished spans by exporter and outcome (exported; dropped: export queue full; "
        "failed: refused by or not delivered to the collector)",
        labels=["exporter", "outcome"],
    )
    queued = GaugeMetricFamily(
        "rtgate_trace_queue_spans", "Finished spans waiting for the exporter", labels=["exporter"]
    )
    snapshot = tracing.snapshot() if tracing is not None else {}
    for name, counts in sorted(snapshot.items()):
        for outcome in ("exported", "dropped", "failed"):
            spans.add_metric([name, outcome], counts[outcome])
        queued.add_metric([name], counts["queued"])
    yield spans
    yield queued


def _histogram(name: str, documentation: str, hist: LatencyHistogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], hist.cumulative(), hist.sum)
    return family


def _spend(governance: Any) -> Iterator[Metric]:
    """Spend and tokens by key alias and model group (never by key), and the database."""
    counters = governance.counters
    spend = CounterMetricFamily(
        "rtgate_spend_usd", "Cost of finished responses, US dollars",
        labels=["key_alias", "model_group"],
    )  # fmt: skip
    for (alias, group), value in sorted(counters.spend_usd.items()):
        spend.add_metric([alias, group], value)
    yield spend
    tokens = CounterMetricFamily(
        "rtgate_tokens", "Tokens of finished responses",
        labels=["key_alias", "model_group", "direction", "modality"],
    )  # fmt: skip
    for labels, count in sorted(counters.tokens.items()):
        tokens.add_metric(list(labels), count)
    yield tokens
    by_deployment = CounterMetricFamily(
        "rtgate_deployment_spend_usd", "Cost of finished responses per deployment, US dollars",
        labels=["model_group", "deployment"],
    )  # fmt: skip
    for (group, deployment), value in sorted(counters.deployment_spend_usd.items()):
        by_deployment.add_metric([group, deployment], value)
    yield by_deployment
    deployment_tokens = CounterMetricFamily(
        "rtgate_deployment_tokens", "Tokens of finished responses per deployment",
        labels=["model_group", "deployment", "direction", "modality"],
    )  # fmt: skip
    for labels, count in sorted(counters.deployment_tokens.items()):
        deployment_tokens.add_metric(list(labels), count)
    yield deployment_tokens
    # Budgeted database keys only (one series each): what a "close to its budget" alert needs.
    key_spend = GaugeMetricFamily(
        "rtgate_key_spend_usd",
        "Spend of a budgeted key in its current budget period, US dollars (every host's, as of "
        "this process's last key refresh, plus its unwritten spend)",
        labels=["key_alias"],
    )
    key_budget = GaugeMetricFamily(
        "rtgate_key_max_budget_usd",
        "max_budget of a budgeted key, US dollars",
        labels=["key_alias"],
    )
    for label, spent, budget in sorted(governance.budgets()):
        key_spend.add_metric([label], spent)
        key_budget.add_metric([label], budget)
    yield key_spend
    yield key_budget
    up = GaugeMetricFamily("rtgate_database_up", "1 while the spend database answers")
    up.add_metric([], 1.0 if governance.database_up else 0.0)
    yield up
    buffered = GaugeMetricFamily(
        "rtgate_spend_buffered_records", "Spend records waiting for the database (in memory)"
    )
    buffered.add_metric([], governance.buffered)
    yield buffered
