"""Host-wide ``/metrics`` under ``--workers``: worker snapshots and their merge.

A scrape of the shared port reaches one worker. So that it answers for the
whole host, every worker publishes its own rendered metric families to a file
in the supervisor's runtime directory (``worker-N.prom``, atomic write and
rename, about once a second and at each scrape it answers), and the answering
worker merges its live families with its peers' files, family by family, as a
:class:`Rule` table says (the table is ``HOST_RULES`` in
:mod:`rtgate.control.metrics`).

Counters and histograms are summed over every worker that ran, exited ones
included: a worker restarted in a slot first adopts the counters of the file
its predecessor left (:meth:`WorkerSnapshots.adopt_predecessor`) and publishes
them added to its own, so the host's totals never go down when a worker dies.

The merge (:func:`merge`, :func:`parse_snapshot`, :func:`render_families`) is
pure; :class:`WorkerSnapshots` does the file I/O. The families are collected on
the event loop (they read the gateway's live counters) and turned into text and
written on a thread, where most of the cost is; never on a session's path.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("rtgate.metrics")

HOST_METRICS_DIR_ENV = "RTGATE_HOST_METRICS_DIR"
"""Set by the supervisor for its workers: the directory of the workers' snapshots."""

SNAPSHOT_SUFFIX = ".prom"
HEADER_PREFIX = "# rtgate worker snapshot"
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024
"""A peer's file larger than this is ignored (a worker's own is tens of kilobytes)."""
MAX_SNAPSHOTS = 1024
"""At most this many peer files are read per scrape (one per worker slot is the norm)."""
LIVE_SECONDS = 5.0
"""A snapshot older than this (its worker publishes every second) counts as an exited worker's."""


class Rule(enum.Enum):
    """How one metric family of every worker becomes the host's family."""

    SUM = "sum"
    """Counters and histograms: summed over every worker, exited ones included."""
    SUM_LIVE = "sum_live"
    """Additive gauges (sessions, connections, bytes held now): summed over live workers."""
    MAX = "max"
    """Gauges every worker sees alike (state, failures, a sink down): the highest live value."""
    MIN = "min"
    """Health gauges where 1 is good (ready, up): 0 if any live worker says 0."""
    PER_WORKER = "per_worker"
    """One series per live worker, labelled ``worker``."""


class SnapshotError(ValueError):
    """A peer's snapshot file that cannot be used (too big, no header, not Prometheus text)."""


@attrs.frozen
class Snapshot:
    """One worker's families as merged: ``live`` is false for a worker that exited."""

    worker: str
    live: bool
    families: Sequence[Metric]


@attrs.frozen
class SnapshotHeader:
    worker: str
    pid: int
    published_at: float
    """Wall-clock seconds (``time.time()``): the one clock the workers share."""


def default_rule(family: Metric) -> Rule:
    """The rule for a family missing from the table: counters sum, anything else per worker."""
    return Rule.SUM if family.type in ("counter", "histogram", "summary") else Rule.PER_WORKER


SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def merge(
    snapshots: Iterable[Snapshot],
    rules: Mapping[str, Rule],
    *,
    label_workers: bool = True,
) -> list[Metric]:
    """The host's families from every worker's (pure).

    Snapshots are combined in worker order whoever answers, so float sums (spend)
    come out the same from every worker. With ``label_workers`` false,
    ``PER_WORKER`` families are copied unlabelled (a worker folding its
    predecessor's counters into its own, one live snapshot).
    """
    ordered = sorted(snapshots, key=lambda s: (_worker_order(s.worker), not s.live))
    families: dict[str, Metric] = {}
    values: dict[str, dict[SampleKey, float]] = {}
    for snap in ordered:
        for family in snap.families:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
                values[family.name] = {}
            rule = rules.get(family.name) or default_rule(family)
            if rule is not Rule.SUM and not snap.live:
                continue  # an exited worker's gauges say nothing about now
            _combine(values[family.name], family, rule, snap.worker if label_workers else None)
    out: list[Metric] = []
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
        out.append(family)
    return out


def _combine(into: dict[SampleKey, float], family: Metric, rule: Rule, worker: str | None) -> None:
    for sample in family.samples:
        labels = sample.labels
        if rule is Rule.PER_WORKER and worker is not None and "worker" not in labels:
            labels = {**labels, "worker": worker}
        key = (sample.name, tuple(sorted(labels.items())))
        old = into.get(key)
        if old is None:
            into[key] = sample.value
        elif rule is Rule.SUM or rule is Rule.SUM_LIVE:
            into[key] = old + sample.value
        elif rule is Rule.MAX:
            into[key] = max(old, sample.value)
        elif rule is Rule.MIN:
            into[key] = min(old, sample.value)
        else:  # PER_WORKER: a second copy of one worker's series (it cannot differ)
            into[key] = sample.value


def _worker_order(worker: str) -> tuple[int, str]:
    return (int(worker), "") if worker.isdigit() else (1 << 30, worker)


def render_families(families: Iterable[Metric]) -> bytes:
    """Prometheus text of ``families`` (pure)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families)))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def snapshot_text(header: SnapshotHeader, families: Iterable[Metric]) -> bytes:
    """A snapshot file's content: one header comment, then the families (pure)."""
    first = (
        f"{HEADER_PREFIX} worker={header.worker} pid={header.pid} "
        f"published_at={header.published_at!r}\n"
    )
    return first.encode() + render_families(families)


def parse_snapshot(data: bytes) -> tuple[SnapshotHeader, list[Metric]]:
    """The header and families of a snapshot file (pure); :class:`SnapshotError` if unusable."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"larger than {MAX_SNAPSHOT_BYTES} bytes")
    first, _, body = data.partition(b"\n")
    try:
        head = first.decode("ascii")
        if not head.startswith(HEADER_PREFIX + " "):
            raise SnapshotError("no snapshot header")
        fields = dict(part.split("=", 1) for part in head[len(HEADER_PREFIX) + 1 :].split())
        header = SnapshotHeader(fields["worker"], int(fields["pid"]), float(fields["published_at"]))
        return header, list(text_string_to_metric_families(body.decode("utf-8")))
    except SnapshotError:
        raise
    except (ValueError, KeyError, IndexError, TypeError) as exc:  # what the parser raises
        raise SnapshotError(f"not a snapshot: {type(exc).__name__}") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerSnapshots:
    """One worker's side of the snapshot directory: its own file, and reading its peers'."""

    def __init__(
        self,
        directory: str,
        worker: str,
        rules: Mapping[str, Rule],
        *,
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
        alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        self.directory = directory
        self.worker = worker
        self.rules = rules
        self.pid = os.getpid() if pid is None else pid
        self.clock = clock
        self.alive = alive
        self.name = f"worker-{worker}{SNAPSHOT_SUFFIX}"
        self.path = os.path.join(directory, self.name)
        self.inherited: list[Metric] = []
        """Counters and histograms of the workers that ran in this slot before this one."""
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._published = 0
        """The sequence number of the collection in this worker's file."""

    def adopt_predecessor(self) -> None:
        """At start: take over the counters the slot's previous worker left in its file."""
        with contextlib.suppress(OSError):  # a missing directory is logged at the first write
            for name in os.listdir(self.directory):
                if name.startswith(self.name + ".") and name.endswith(".tmp"):
                    os.remove(os.path.join(self.directory, name))  # a write never finished
        try:
            header, families = self._read(self.path)
        except FileNotFoundError:
            return
        except (OSError, SnapshotError) as exc:
            self._warn(self.name, exc)
            return
        if header.pid == self.pid:
            return
        self.inherited = merge([Snapshot(self.worker, False, families)], self.rules)
        log.info("worker %s: carrying on the counters of its predecessor (pid %d)",
                 self.worker, header.pid)  # fmt: skip

    def own_view(self, families: Sequence[Metric]) -> Sequence[Metric]:
        """This worker's families with its slot's predecessors' counters added."""
        if not self.inherited:
            return families
        snaps = [
            Snapshot(self.worker, True, families),
            Snapshot(self.worker, False, self.inherited),
        ]
        return merge(snaps, self.rules, label_workers=False)

    def publish(self, own: Iterable[Metric], sequence: int) -> bool:
        """Write ``own`` (already :meth:`own_view`) as this worker's file, atomically.

        ``sequence`` numbers the collections: the server's publishing task and each
        scrape write from threads of their own, and a collection older than the file's
        must not replace it (peers would see counters go back). Safe to call from any
        thread; False when a newer snapshot was already written.
        """
        header = SnapshotHeader(self.worker, self.pid, self.clock())
        data = snapshot_text(header, own)
        with self._lock:
            if sequence <= self._published:
                return False
            tmp = f"{self.path}.{self.pid}.{sequence}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
            os.replace(tmp, self.path)
            self._published = sequence
        return True

    def peers(self) -> list[Snapshot]:
        """Every other slot's last snapshot; live if fresh and its process runs."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            self._warn(self.directory, exc)
            return []
        names = [n for n in names if n.endswith(SNAPSHOT_SUFFIX) and n != self.name]
        if len(names) > MAX_SNAPSHOTS:
            self._warn(self.directory, SnapshotError(f"more than {MAX_SNAPSHOTS} snapshots"))
            names = names[:MAX_SNAPSHOTS]
        now = self.clock()
        out: list[Snapshot] = []
        for name in names:
            try:
                header, families = self._read(os.path.join(self.directory, name))
            except FileNotFoundError:
                continue
            except (OSError, SnapshotError) as exc:
                self._warn(name, exc)
                continue
            if header.worker == self.worker:
                continue  # a copy of this slot's file under another name: never counted twice
            live = now - header.published_at <= LIVE_SECONDS and self.alive(header.pid)
            out.append(Snapshot(header.worker, live, families))
        return out

    def _read(self, path: str) -> tuple[SnapshotHeader, list[Metric]]:
        with open(path, "rb") as src:
            data = src.read(MAX_SNAPSHOT_BYTES + 1)
        return parse_snapshot(data)

    def _warn(self, what: str, exc: Exception) -> None:
        if what not in self._warned:  # once per file: a scrape a second must not flood the log
            self._warned.add(what)
            log.warning("host metrics: ignoring %s: %s", what, exc)
