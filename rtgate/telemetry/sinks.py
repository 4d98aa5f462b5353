"""Where event-log records go: files, stderr, an HTTP collector.

Owns the sinks and their delivery policy. A *destination* only knows how to
deliver one batch of JSON lines (or raise :class:`SinkDown`); a :class:`Sink`
wraps one with what every destination needs: a few quick retries, then an
on-disk spool bounded in bytes while the destination is down, a growing pause
before trying it again, replay of the spool (oldest first) once it answers, and
counters of records written, dropped, spooled and replayed.

Delivery is at-least-once: a batch whose HTTP response is lost may be sent again.
File I/O runs in worker threads so a slow disk never stalls a relay.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import sys
import urllib.parse
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal, Protocol

import attrs
import h11
import trio

from rtgate.config.model import Secret
from rtgate.errors import ConfigError, scrub

log = logging.getLogger("rtgate.eventlog")

Batch = Sequence[bytes]
"""JSON lines without their newline."""


class SinkDown(Exception):
    """A destination could not take a batch. ``permanent``: retrying will not help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class Destination(Protocol):
    describe: str

    async def deliver(self, lines: Batch) -> None:
        """Write every line or raise :class:`SinkDown`."""

    async def aclose(self) -> None: ...


def _joined(lines: Batch) -> bytes:
    return b"".join(line + b"\n" for line in lines)


# -- destinations -----------------------------------------------------------------------


class FileDestination:
    """Appends JSON lines to ``path``; past ``max_bytes`` it rotates to ``path.1`` ... ``path.N``."""

    def __init__(self, path: str, *, max_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.describe = f"file:{path}"
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: IO[bytes] | None = None
        self._size = 0

    async def deliver(self, lines: Batch) -> None:
        await trio.to_thread.run_sync(self._write, _joined(lines))

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._close)

    def _write(self, data: bytes) -> None:
        try:
            file = self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
                file = self._open()
        except OSError as exc:
            self._close()
            raise SinkDown(f"{self.describe}: {exc}") from None
        start = self._size
        try:
            file.write(data)
            file.flush()
        except OSError as exc:
            # Cut a partial batch so the retry does not leave half a line behind.
            try:
                file.truncate(start)
            except OSError:
                pass
            self._close()
            raise SinkDown(f"{self.describe}: {exc}") from None
        self._size = start + len(data)

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> None:
        self._close()
        if self.backups <= 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


class StderrDestination:
    """Writes JSON lines to the process's stderr (or any binary stream, for tests)."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream
        self.describe = "stderr"

    async def deliver(self, lines: Batch) -> None:
        await trio.to_thread.run_sync(self._write, _joined(lines))

    def _write(self, data: bytes) -> None:
        stream = self._stream if self._stream is not None else sys.stderr.buffer
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError) as exc:
            raise SinkDown(f"stderr: {exc}") from None

    async def aclose(self) -> None:
        return None


class _ClosedEarly(Exception):
    pass


class HttpDestination:
    """POSTs each batch as ``application/x-ndjson`` to ``url`` over HTTP/1.1 (h11 on trio).

    One kept-alive connection is reused; a stale one (closed by the collector
    between batches) is replaced once per batch. 2xx is success; 408, 425, 429
    and 5xx mean "down, retry later"; other statuses reject the batch for good.
    """

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {scrub(url)!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.describe = f"http:{scrub(f'{parts.scheme}://{parts.netloc}{parts.path}')}"
        self._secrets = tuple(v for k, v in (headers or {}).items() if k.lower() != "content-type")
        self.headers: list[tuple[str, str]] = [
            ("Host", parts.netloc.rpartition("@")[2]),
            ("User-Agent", "rtgate-eventlog"),
            ("Content-Type", "application/x-ndjson"),
            *((k, v) for k, v in (headers or {}).items()),
        ]
        self.timeout = timeout
        self._stream: trio.abc.Stream | None = None
        self._conn: h11.Connection | None = None

    async def deliver(self, lines: Batch) -> None:
        body = _joined(lines)
        status: int | None = None
        with trio.move_on_after(self.timeout):
            status = await self._post(body)
        if status is None:
            await self._drop()
            raise SinkDown(f"{self.describe}: no answer within {self.timeout}s")
        if 200 <= status < 300:
            return
        retryable = status in (408, 425, 429) or status >= 500
        raise SinkDown(f"{self.describe}: HTTP {status}", permanent=not retryable)

    async def _post(self, body: bytes) -> int:
        while True:
            fresh = self._stream is None
            try:
                if fresh:
                    await self._connect()
                return await self._exchange(body)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                    h11.ProtocolError, _ClosedEarly) as exc:  # fmt: skip
                await self._drop()
                if fresh:
                    raise SinkDown(f"{self.describe}: {scrub(str(exc), self._secrets)}") from None

    async def _connect(self) -> None:
        if self.https:
            self._stream = await trio.open_ssl_over_tcp_stream(self.host, self.port)
        else:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
        self._conn = h11.Connection(h11.CLIENT)

    async def _exchange(self, body: bytes) -> int:
        stream, conn = self._stream, self._conn
        assert stream is not None and conn is not None
        headers = [*self.headers, ("Content-Length", str(len(body)))]
        data = conn.send(h11.Request(method="POST", target=self.target, headers=headers)) or b""
        data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
        status: int | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise _ClosedEarly("connection closed before the response ended")
        assert status is not None
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self._drop()
        return status

    async def _drop(self) -> None:
        stream, self._stream, self._conn = self._stream, None, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        await self._drop()


# -- spool ------------------------------------------------------------------------------


class Spool:
    """Batches kept on disk while a destination is down: one file per batch, oldest first.

    Bounded by ``max_bytes``; a batch that does not fit is refused (and counted
    dropped by the sink). Files written before a restart are picked up again.
    """

    SUFFIX = ".jsonl"

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._files: deque[tuple[Path, int]] = deque()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._files)

    async def open(self) -> None:
        await trio.to_thread.run_sync(self._scan)

    def _scan(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        found = sorted(p for p in self.directory.iterdir() if p.name.endswith(self.SUFFIX))
        for path in found:
            size = path.stat().st_size
            self._files.append((path, size))
            self.bytes += size
            try:
                self._seq = max(self._seq, int(path.name.removesuffix(self.SUFFIX)) + 1)
            except ValueError:
                pass

    async def put(self, lines: Batch) -> bool:
        data = _joined(lines)
        if self.bytes + len(data) > self.max_bytes:
            return False
        path = self.directory / f"{self._seq:016d}{self.SUFFIX}"
        self._seq += 1
        try:
            await trio.to_thread.run_sync(_write_atomically, path, data)
        except OSError as exc:
            log.warning("event log spool %s: %s", self.directory, exc)
            return False
        self._files.append((path, len(data)))
        self.bytes += len(data)
        return True

    async def oldest(self) -> list[bytes] | None:
        while self._files:
            path = self._files[0][0]
            try:
                data = await trio.to_thread.run_sync(path.read_bytes)
            except OSError:
                self.pop_sync()  # vanished or unreadable: nothing to replay
                continue
            return [line for line in data.split(b"\n") if line]
        return None

    async def pop(self) -> None:
        await trio.to_thread.run_sync(self.pop_sync)

    def pop_sync(self) -> None:
        path, size = self._files.popleft()
        self.bytes -= size
        path.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
    os.replace(tmp, path)


# -- the sink ---------------------------------------------------------------------------


@attrs.define
class SinkCounters:
    """Records, not batches: written includes replayed; dropped is broken down by reason."""

    written: int = 0
    spooled: int = 0
    replayed: int = 0
    failures: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def drop(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


class Sink:
    """One destination with retries, spool, pause while down, and counters.

    :meth:`run` consumes batches from a channel until it closes. Set
    ``draining`` before closing it: the remaining batches then get one attempt
    each and go straight to the spool on failure, so shutdown stays short.
    """

    def __init__(
        self,
        name: str,
        destination: Destination,
        *,
        retries: int = 2,
        retry_backoff: float = 0.5,
        down_backoff: float = 1.0,
        down_backoff_max: float = 60.0,
        spool: Spool | None = None,
        queue_batches: int = 8,
    ) -> None:
        self.name = name
        self.destination = destination
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.down_backoff = down_backoff
        self.down_backoff_max = down_backoff_max
        self.spool = spool
        self.queue_batches = queue_batches
        self.counters = SinkCounters()
        self.draining = False
        self.last_error: str | None = None
        self._down_until = -math.inf
        self._pause = down_backoff
        self.first_write: bool | None = None
        """Whether the first delivery succeeded (None: nothing delivered yet); logged once."""

    @property
    def down(self) -> bool:
        return self._down_until > -math.inf

    async def run(self, batches: trio.MemoryReceiveChannel[Batch]) -> None:
        try:
            if self.spool is not None:
                await self.spool.open()
            await self._loop(batches)
        finally:
            with trio.CancelScope(shield=True):
                await self.destination.aclose()

    async def _loop(self, batches: trio.MemoryReceiveChannel[Batch]) -> None:
        while True:
            wait = math.inf
            if self.spool is not None and len(self.spool) and not self.draining:
                wait = max(0.0, self._down_until - trio.current_time())
            batch: Batch | None = None
            with trio.move_on_after(wait):
                try:
                    batch = await batches.receive()
                except trio.EndOfChannel:
                    return
            if batch is None:
                await self._replay()
            else:
                await self.handle(batch)

    async def handle(self, batch: Batch) -> None:
        """Deliver one batch now, or spool it (or drop it when there is no room)."""
        if not batch:
            return
        if trio.current_time() < self._down_until and not self.draining:
            await self._spool_or_drop(batch, "down")
            return
        if self.spool is not None and len(self.spool) and not await self._replay():
            await self._spool_or_drop(batch, "down")
            return
        if await self._deliver(batch, 0 if self.draining else self.retries) == "failed":
            await self._spool_or_drop(batch, "down")

    async def _deliver(self, batch: Batch, retries: int) -> Literal["ok", "rejected", "failed"]:
        """Try ``1 + retries`` times; "failed" marks the destination down for a growing pause."""
        for attempt in range(retries + 1):
            try:
                await self.destination.deliver(batch)
            except SinkDown as exc:
                self.counters.failures += 1
                self.last_error = exc.message
                if exc.permanent:
                    log.warning("event log sink %s rejected a batch: %s", self.name, exc.message)
                    self.counters.drop("rejected", len(batch))
                    return "rejected"
                if attempt < retries:
                    await trio.sleep(self.retry_backoff * 2**attempt)
                continue
            self.counters.written += len(batch)
            if self.first_write is None:
                self.first_write = True
                log.info("event log sink %s: first write ok", self.name)
            if self.down:
                log.info("event log sink %s is back", self.name)
            self._down_until = -math.inf
            self._pause = self.down_backoff
            return "ok"
        if self.first_write is None:
            self.first_write = False
            log.warning("event log sink %s failed its first write: %s", self.name, self.last_error)
        elif not self.down:
            log.warning("event log sink %s is down: %s", self.name, self.last_error)
        self._down_until = trio.current_time() + self._pause
        self._pause = min(self._pause * 2, self.down_backoff_max)
        return "failed"

    async def _replay(self) -> bool:
        """Deliver spooled batches oldest first; False when the destination failed again."""
        spool = self.spool
        while spool is not None and len(spool):
            lines = await spool.oldest()
            if lines is None:
                break
            outcome = await self._deliver(lines, 0)
            if outcome == "failed":
                return False
            if outcome == "ok":
                self.counters.replayed += len(lines)
            await spool.pop()
        return True

    async def _spool_or_drop(self, batch: Batch, reason: str) -> None:
        if self.spool is not None:
            if await self.spool.put(batch):
                self.counters.spooled += len(batch)
                return
            reason = "spool_full"
        self.counters.drop(reason, len(batch))


# -- configuration ----------------------------------------------------------------------

_COMMON = frozenset(
    {"type", "name", "retries", "retry_backoff", "down_backoff", "down_backoff_max",
     "spool_dir", "spool_max_bytes", "queue_batches"}
)  # fmt: skip
_BY_TYPE = {
    "file": frozenset({"path", "max_bytes", "backups"}),
    "stderr": frozenset(),
    "http": frozenset({"url", "headers", "timeout"}),
}


def build_sink(spec: Mapping[str, object], index: int = 0) -> Sink:
    """A sink from one ``rtgate.event_log.sinks`` entry; :class:`ConfigError` if it is wrong.

    Common keys: ``name``, ``retries`` (2), ``retry_backoff`` (0.5 s),
    ``down_backoff`` / ``down_backoff_max`` (1 s doubling to 60 s),
    ``spool_dir`` (none: batches are dropped and counted while down),
    ``spool_max_bytes`` (64 MiB), ``queue_batches`` (8).
    ``file``: ``path``, ``max_bytes`` (100 MiB), ``backups`` (5).
    ``http``: ``url``, ``headers`` (values may be ``os.environ/VAR``), ``timeout`` (10 s).
    """
    where = f"rtgate.event_log.sinks[{index}]"
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _BY_TYPE:
        raise ConfigError(f"{where}.type must be one of {', '.join(_BY_TYPE)}, got {kind!r}")
    unknown = set(spec) - _COMMON - _BY_TYPE[str(kind)]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    get = _Getter(spec, where)
    destination: Destination
    if kind == "file":
        destination = FileDestination(
            get.text("path", required=True),
            max_bytes=get.integer("max_bytes", 100 * 1024 * 1024),
            backups=get.integer("backups", 5),
        )
    elif kind == "stderr":
        destination = StderrDestination()
    else:
        try:
            destination = HttpDestination(
                get.text("url", required=True),
                headers=get.headers("headers"),
                timeout=get.number("timeout", 10.0),
            )
        except ValueError as exc:
            raise ConfigError(f"{where}.url: {exc}") from None
    spool_dir = get.text("spool_dir")
    spool = (
        Spool(spool_dir, get.integer("spool_max_bytes", 64 * 1024 * 1024)) if spool_dir else None
    )
    return Sink(
        get.text("name") or f"{kind}{index}",
        destination,
        retries=get.integer("retries", 2),
        retry_backoff=get.number("retry_backoff", 0.5),
        down_backoff=get.number("down_backoff", 1.0),
        down_backoff_max=get.number("down_backoff_max", 60.0),
        spool=spool,
        queue_batches=max(1, get.integer("queue_batches", 8)),
    )


def sink_problems(specs: Iterable[Mapping[str, object]]) -> list[str]:
    """What can be known before the first write about sinks that cannot work, one line each.

    A file sink needs an existing, writable directory and, if its file exists, a
    writable regular file (``/dev/full`` accepts the open and fails every write;
    the console is ``type: stderr``). A spool directory must exist or be creatable.
    ``rtgate check`` refuses these; ``rtgate serve`` logs them at start-up.
    """
    problems: list[str] = []
    for index, spec in enumerate(specs):
        where = f"rtgate.event_log.sinks[{index}]"
        path = spec.get("path")
        if spec.get("type") == "file" and isinstance(path, str):
            problem = _file_problem(Path(path))
            if problem:
                problems.append(f"{where} (file {path}): {problem}")
        spool_dir = spec.get("spool_dir")
        if isinstance(spool_dir, str):
            problem = _directory_problem(Path(spool_dir), create=True)
            if problem:
                problems.append(f"{where}.spool_dir {spool_dir}: {problem}")
    return problems


def _file_problem(path: Path) -> str | None:
    parent = path.parent
    problem = _directory_problem(parent, create=False)
    if problem:
        return problem
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISREG(mode):
        return "not a regular file (for the console use type: stderr)"
    if not os.access(path, os.W_OK):
        return "not writable by this user"
    return None


def _directory_problem(directory: Path, *, create: bool) -> str | None:
    """None if ``directory`` is a writable directory (or, with ``create``, could be made)."""
    existing = directory
    while create and not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():
        return f"directory {directory} does not exist"
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"directory {existing} is not writable by this user"
    return None


@attrs.frozen
class _Getter:
    spec: Mapping[str, object]
    where: str

    def text(self, key: str, *, required: bool = False) -> str:
        value = self.spec.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.where}.{key} is required")
            return ""
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.where}.{key} must be a non-empty string")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{self.where}.{key} must be a number >= 0")
        return float(value)

    def integer(self, key: str, default: int) -> int:
        value = self.spec.get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{self.where}.{key} must be an integer >= 0")
        return value

    def headers(self, key: str) -> dict[str, str]:
        value = self.spec.get(key) or {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.where}.{key} must be a mapping of header names to values")
        out: dict[str, str] = {}
        for name, raw in value.items():
            text = raw.value if isinstance(raw, Secret) else str(raw)  # from the loader
            if text.startswith("os.environ/"):
                var = text.removeprefix("os.environ/")
                if var not in os.environ:
                    raise ConfigError(
                        f"{self.where}.{key}.{name}: environment variable {var} is not set"
                    )
                text = os.environ[var]
            out[str(name)] = text
        return out
