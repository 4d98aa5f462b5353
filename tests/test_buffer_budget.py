"""Unfinished messages: the gateway-wide buffer budget, ``message_timeout``, memory given back.

The end-to-end tests drive raw sockets (``RawWs``: websockets' sans-IO client),
because a client library would never leave a message unfinished. The pure parts
(the budget, the reader's count of held bytes) are tested with plain calls and
Hypothesis.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame
from websockets.protocol import OPEN, Protocol, Side
from websockets.streams import StreamReader

from rtgate.edge.memory import pin_malloc_thresholds
from rtgate.net.budget import BufferBudget
from rtgate.net.fastframes import MessageReader
from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.test_faults_support import RawWs, open_session, sessions_idle, single_yaml
from tests.test_ops_support import MASTER, free_port, mock_config, rtgate_process, scrape, value

PREFIX = b'{"type":"input_audio_buffer.append","audio":"'


# -- the budget and the reader, pure ------------------------------------------------------


class _Holder:
    def __init__(self, budget: BufferBudget) -> None:
        self.budget = budget
        self.held = 0
        self.evicted = False

    def set(self, held: int) -> None:
        before, self.held = self.held, held
        self.budget.change(self, before, held)

    def evict(self) -> None:
        self.evicted = True
        self.set(0)


@given(
    st.integers(1, 5000),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3000)), max_size=60),
    st.lists(st.integers(0, 2000), max_size=5),
)
def test_budget_evicts_the_biggest_holders_until_within_the_limit(
    limit: int, changes: list[tuple[int, int]], queued: list[int]
) -> None:
    budget = BufferBudget(limit)
    holders = [_Holder(budget) for _ in range(6)]
    for size in queued:
        budget.queue(size)
    for index, held in changes:
        holder = holders[index]
        others = {h: h.held for h in holders if h is not holder and not h.evicted}
        growing = held > holder.held
        holder.set(held)
        live = [h for h in holders if h.held]
        assert budget.held == sum(queued) + sum(h.held for h in live)
        assert set(budget.holders) == set(live)
        if growing and budget.held > limit:
            assert not live  # over the limit only when nothing is left to evict
        newly = [h for h in holders if h.evicted and h in others]
        for victim in newly:  # whoever went was at least as big as whoever stayed
            assert all(others[victim] >= h.held for h in live)
        for h in holders:
            h.evicted = False


def test_budget_without_limit_only_counts() -> None:
    budget = BufferBudget(None)
    holder = _Holder(budget)
    holder.set(10**9)
    budget.queue(10**9)
    assert budget.held == 2 * 10**9 and budget.evictions == 0 and not holder.evicted


def _fragments(message: bytes, sizes: list[int]) -> list[bytes]:
    """``message`` as masked client frames: TEXT then CONT, the last with FIN."""
    cuts = [0, *sorted({min(s, len(message)) for s in sizes}), len(message)]
    pieces = [message[a:b] for a, b in itertools.pairwise(cuts) if b > a] or [b""]
    client = Protocol(Side.CLIENT, state=OPEN, max_size=None)
    for i, piece in enumerate(pieces):
        fin = i == len(pieces) - 1
        if i == 0:
            client.send_text(piece, fin=fin)
        else:
            client.send_continuation(piece, fin=fin)
    data = b"".join(client.data_to_send())
    # Split back into one chunk per frame, to feed them one by one.
    frames: list[bytes] = []
    reader = StreamReader()
    reader.feed_data(data)
    at = 0
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=True)
        try:
            while True:
                next(parser)
        except StopIteration:
            pass
        end = len(data) - len(reader.buffer)
        frames.append(data[at:end])
        at = end
    return frames


@settings(max_examples=150, deadline=None)
@given(
    st.binary(min_size=1, max_size=3000),
    st.lists(st.integers(1, 3000), max_size=6),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_reader_counts_exactly_what_unfinished_messages_hold(
    message: bytes, sizes: list[int], cuts: list[int]
) -> None:
    """However a message is fragmented and cut into reads, the reader reports the bytes of
    it held so far, gives the message back whole, and then holds nothing."""
    message = message.hex().encode()  # valid UTF-8
    data = b"".join(_fragments(message, sizes))
    budget = BufferBudget(None)
    reader = MessageReader(Protocol(Side.SERVER, state=OPEN, max_size=None), budget=budget)
    out: list[object] = []
    bounds = sorted({0, len(data), *(min(c * 7, len(data)) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        out += reader.feed(data[a:b])
        assert budget.held == reader.held
        if b < len(data):
            assert 0 < reader.held <= b  # never more than what has arrived
    assert out == [message]
    assert reader.held == 0 and budget.held == 0 and not budget.holders


def test_discarded_reader_frees_its_message_and_ignores_input() -> None:
    budget = BufferBudget(None)
    reader = MessageReader(Protocol(Side.SERVER, state=OPEN, max_size=None), budget=budget)
    first, *rest = _fragments(PREFIX + b"A" * 5000, [len(PREFIX), 2000, 4000])
    reader.feed(first + rest[0])
    assert reader.held == 2000 and budget.held == 2000
    reader.discard()
    assert reader.held == 0 and budget.held == 0 and not budget.holders
    assert reader.feed(b"".join(rest)) == [] and reader.held == 0


# -- end to end: the budget ---------------------------------------------------------------


async def _held_at_least(gw_budget: BufferBudget, size: int) -> None:
    with trio.fail_after(5):
        while gw_budget.held < size:
            await trio.sleep(0.005)


async def test_over_the_budget_the_biggest_unfinished_message_is_closed_1013(
    fake_openai: FakeRealtimeServer,
) -> None:
    """A small session pushes the gateway over its budget: the session holding the biggest
    unfinished message gets an ``error`` event and 1013; the small one, and a session
    sending whole messages, go on untouched, and the small message arrives byte for byte."""
    config = single_yaml(fake_openai.base_url, limits="    max_buffered_bytes: 3000000")
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            budget = gw.gateway.buffers
            big, small, steady = [await open_session(gw) for _ in range(3)]
            try:
                small.protocol.send_text(PREFIX, fin=False)
                small.protocol.send_continuation(b"B" * 500_000, fin=False)
                await small.flush()
                await _held_at_least(budget, 500_000)
                big.protocol.send_text(PREFIX, fin=False)
                for _ in range(2):
                    big.protocol.send_continuation(b"A" * 1_000_000, fin=False)
                await big.flush()
                await _held_at_least(budget, 2_500_000)
                holding = await scrape(gw.port)
                await steady.send_json({"type": "input_audio_buffer.append", "audio": "QUJD"})
                small.protocol.send_continuation(b"B" * 600_000, fin=False)  # now over 3 MB
                await small.flush()
                events, close = await big.recv_until_closed()
                small.protocol.send_continuation(b'"}', fin=True)
                await small.flush()
                await steady.send_json({"type": "input_audio_buffer.append", "audio": "REVG"})
                with trio.fail_after(5):
                    while len(fake_openai.received) < 3:
                        await trio.sleep(0.01)
                held_after = budget.held
                samples = await scrape(gw.port)
            finally:
                for ws in (big, small, steady):
                    await ws.aclose()
            await sessions_idle(gw)
            assert budget.held == 0 and not budget.holders
    assert close.code == 1013
    errors = [e for e in events if e["type"] == "error"]
    assert [e["error"]["code"] for e in errors] == ["max_buffered_bytes"]
    assert errors[0]["error"]["type"] == "server_error"
    assert PREFIX + b"B" * 1_100_000 + b'"}' in fake_openai.received
    assert len(fake_openai.received) == 3  # the big message never reached the provider
    assert held_after == 0
    assert value(samples, "rtgate_limit_closes_total", limit="max_buffered_bytes") == 1
    assert value(holding, "rtgate_buffered_bytes") >= 2_500_000
    assert value(holding, "rtgate_buffered_messages_unfinished") == 2
    assert value(samples, "rtgate_buffered_bytes") == 0


async def test_a_session_leaving_mid_message_gives_its_bytes_back(
    fake_openai: FakeRealtimeServer,
) -> None:
    with trio.fail_after(15):
        async with open_gateway(single_yaml(fake_openai.base_url)) as gw:
            budget = gw.gateway.buffers
            clients = [await open_session(gw) for _ in range(4)]
            for i, ws in enumerate(clients):
                if i < 3:  # fragments, the last one cut short
                    ws.protocol.send_text(PREFIX, fin=False)
                    ws.protocol.send_continuation(b"A" * 200_000, fin=False)
                else:  # the first part of one big frame
                    ws.protocol.send_text(b"x" * 300_000)
                data = b"".join(ws.protocol.data_to_send())
                await ws.stream.send_all(data[: len(data) - 1000])
            await _held_at_least(budget, 4 * 199_000)
            assert len(budget.holders) == 4
            for ws in clients:
                await ws.aclose()
            await sessions_idle(gw)
            assert budget.held == 0 and not budget.holders


# -- end to end: message_timeout ----------------------------------------------------------


async def test_a_message_not_completed_within_message_timeout_is_closed_1008(
    fake_openai: FakeRealtimeServer,
) -> None:
    """A first fragment alone, or the first bytes of one frame, are cut at message_timeout
    (with an ``error`` event first); a message whose fragments arrive within it is relayed."""
    config = single_yaml(fake_openai.base_url, limits="    message_timeout: 1.0")
    with trio.fail_after(20):
        async with open_gateway(config) as gw:
            fragment_only, half_frame, slow_but_in_time = [await open_session(gw) for _ in range(3)]
            try:
                started = trio.current_time()
                fragment_only.protocol.send_text(PREFIX, fin=False)
                await fragment_only.flush()
                half_frame.protocol.send_text(b"y" * 100_000)
                frame = b"".join(half_frame.protocol.data_to_send())
                await half_frame.stream.send_all(frame[:5000])
                slow_but_in_time.protocol.send_text(PREFIX, fin=False)
                await slow_but_in_time.flush()
                for piece in (b"QUJD", b'"}'):
                    await trio.sleep(0.3)
                    slow_but_in_time.protocol.send_continuation(piece, fin=piece == b'"}')
                    await slow_but_in_time.flush()
                outcomes = []
                for ws in (fragment_only, half_frame):
                    events, close = await ws.recv_until_closed(timeout=5)
                    outcomes.append((events, close.code, trio.current_time() - started))
                await slow_but_in_time.send_json({"type": "input_audio_buffer.clear"})
                with trio.fail_after(5):
                    while len(fake_openai.received) < 2:
                        await trio.sleep(0.01)
            finally:
                for ws in (fragment_only, half_frame, slow_but_in_time):
                    await ws.aclose()
            await sessions_idle(gw)
            limit_closes = dict(gw.gateway.counters.relay.limit_closes)
    for events, code, elapsed in outcomes:
        assert code == 1008
        assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["message_timeout"]
        assert 0.9 <= elapsed < 4
    assert fake_openai.received[0] == PREFIX + b'QUJD"}'
    assert limit_closes["message_timeout"] == 2


# -- memory goes back to the OS -----------------------------------------------------------

_ALLOCATOR_PROBE = textwrap.dedent(
    """
    import sys
    from rtgate.edge.memory import pin_malloc_thresholds

    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024

    if sys.argv[1] == "pinned":
        pin_malloc_thresholds({})
    first = b"x" * (1 << 20)
    del first  # freeing one big mapping raises glibc's dynamic mmap threshold
    before = rss()
    blocks, pins = [], []
    for _ in range(200):
        blocks.append(b"x" * (1 << 20))
        pins.append(bytearray(600))  # small heap objects above each block
    del blocks
    print(rss() - before)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("mode", ["default", "pinned"])
def test_pinned_malloc_thresholds_give_freed_big_buffers_back(mode: str) -> None:
    """The cause, shown in a child process: with glibc's dynamic threshold, 200 MiB of
    freed 1 MiB buffers stay in the process; with the thresholds pinned they go back."""
    operator = {"MALLOC_MMAP_THRESHOLD_": "1", "MALLOC_TRIM_THRESHOLD_": "1"}
    assert pin_malloc_thresholds(operator) == []  # an operator's environment variables win
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _ALLOCATOR_PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        cwd=root,
    )
    kept = int(done.stdout) / (1 << 20)
    if mode == "pinned":
        assert kept < 20, f"{kept:.0f} MiB kept"
    else:
        assert kept > 150, f"{kept:.0f} MiB kept (glibc's dynamic threshold did not show)"


async def test_rtgate_serve_returns_memory_after_sessions_holding_messages_end(
    tmp_path: Path,
) -> None:
    """``rtgate serve`` end to end: 12 sessions each hold 6 MiB of unfinished message, then
    leave; the process's RSS comes back near where it started."""
    port = free_port()
    config = mock_config(port) + "  log_level: warning\n"
    path = "/v1/realtime?model=m"
    headers = {"Authorization": f"Bearer {MASTER}"}
    async with rtgate_process(tmp_path, config, port) as child:
        pid = child.process.pid

        def rss() -> int:
            with open(f"/proc/{pid}/status") as f:
                return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) * 1024

        with trio.fail_after(60):
            warm = await RawWs.open(port, path, headers)
            assert (await warm.recv_json())["type"] == "session.created"
            await warm.aclose()
            await trio.sleep(0.5)
            before = rss()
            clients = []
            for _ in range(12):
                ws = await RawWs.open(port, path, headers)
                assert (await ws.recv_json())["type"] == "session.created"
                ws.protocol.send_text(PREFIX, fin=False)
                for _ in range(6):
                    ws.protocol.send_continuation(b"A" * (1 << 20), fin=False)
                await ws.flush()
                clients.append(ws)
            while rss() < before + 60 * (1 << 20):
                await trio.sleep(0.05)
            holding = rss()
            for ws in clients:
                await ws.aclose()
            await trio.sleep(2.0)
            after = rss()
    assert holding - before > 60 * (1 << 20)
    assert after - before < 8 * (1 << 20), (before, holding, after)
