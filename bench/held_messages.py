"""RSS of a gateway whose clients hold unfinished messages, and after they leave.

Each of ``--sessions`` clients opens a session of the mock model and sends the
first ``--mib`` MiB of a fragmented text message (1 MiB fragments), never the
last fragment. The gateway's RSS is read before the sessions, while they hold
their messages, and ``--settle`` seconds after every client has gone. With a
buffer budget (``rtgate.limits.max_buffered_bytes``) the clients over it are
closed; the script counts the close codes the clients saw.

    python bench/held_messages.py --sessions 40 --mib 15            # this tree
    python bench/held_messages.py --tree /tmp/main-tree --budget none

Prints one JSON object: RSS in MiB at each stage and the close codes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import MASK, Target, close_client, connect, first_event, rss_bytes
from bench.procs import ROOT, rtgate
from bench.wsframes import CLOSE, FrameReader, ProtocolError

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension ships in the wheels
    from websockets.utils import apply_mask

MIB = 1024 * 1024


def config_text(budget: str | None) -> str:
    limits = "    ping_interval: 0\n"
    if budget is not None:
        limits += f"    max_buffered_bytes: {budget}\n"
    return f"""\
model_list:
  - model_name: mock-realtime
    litellm_params:
      model: mock/gpt-realtime
rtgate:
  host: 127.0.0.1
  log_level: warning
  limits:
{limits}"""


def fragment(payload: bytes, *, first: bool, fin: bool = False) -> bytes:
    """One masked client frame of a fragmented text message (TEXT first, then CONT)."""
    opcode = 0x1 if first else 0x0
    head = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, 0x80 | 127, len(payload))
    return head + MASK + apply_mask(payload, MASK)


def hold(target: Target, mib: int, fragment_kib: int) -> tuple[socket.socket, FrameReader]:
    """A session that has sent ``mib`` MiB of a message it never finishes."""
    client, frames = connect(target)
    first_event(client, frames)
    sock = client.sock
    per_mib = MIB // (fragment_kib * 1024)
    chunk = b"".join(fragment(b"A" * fragment_kib * 1024, first=False) for _ in range(per_mib))
    prefix = b'{"type":"input_audio_buffer.append","audio":"'
    try:
        sock.sendall(fragment(prefix, first=True))
        for _ in range(mib):
            sock.sendall(chunk)
    except OSError:
        pass  # closed by the gateway's budget: counted from the close frame
    return sock, client.reader


def close_code(sock: socket.socket, reader: FrameReader, wait: float) -> int | None:
    """The close code the gateway sent (None: none within ``wait``, 1006: EOF without one)."""
    sock.settimeout(wait)
    try:
        while True:
            data = sock.recv(262144)
            if not data:
                return 1006
            for opcode, payload in reader.feed(data):
                if opcode == CLOSE:
                    return int(struct.unpack("!H", payload[:2])[0]) if payload else 1005
    except TimeoutError:
        return None
    except (OSError, ProtocolError):
        return 1006


def measure(
    tree: Path, sessions: int, mib: int, budget: str | None, settle: float, fragment_kib: int
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        rtgate(Path(tmp), 0, config_text(budget), tree=tree) as (port, pid),
    ):
        target = Target(f"ws://127.0.0.1:{port}/v1/realtime?model=mock-realtime")
        warm, frames = connect(target)  # start-up allocations out of the baseline
        first_event(warm, frames)
        close_client(warm)
        time.sleep(1.0)
        before = rss_bytes([pid])
        held = [hold(target, mib, fragment_kib) for _ in range(sessions)]
        time.sleep(2.0)
        holding = rss_bytes([pid])
        codes = Counter(str(close_code(sock, reader, 0.5)) for sock, reader in held)
        for sock, _ in held:
            with contextlib.suppress(OSError):
                sock.close()
        time.sleep(settle)
        after = rss_bytes([pid])
    return {
        "tree": str(tree),
        "sessions": sessions,
        "mib_each": mib,
        "fragment_kib": fragment_kib,
        "budget": budget,
        "rss_mib": {
            "before": round(before / MIB, 1),
            "holding": round(holding / MIB, 1),
            "after": round(after / MIB, 1),
        },
        "close_codes": dict(codes),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to run")
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--mib", type=int, default=15, help="MiB each session holds")
    parser.add_argument(
        "--budget",
        default=None,
        help="rtgate.limits.max_buffered_bytes in bytes, or none (default: the tree's default)",
    )
    parser.add_argument("--fragment-kib", type=int, default=1024, help="size of each fragment")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the clients left")
    args = parser.parse_args(argv)
    budget = {"default": None, "none": "0"}.get(args.budget, args.budget)
    result = measure(
        args.tree.resolve(), args.sessions, args.mib, budget, args.settle, args.fragment_kib
    )
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
