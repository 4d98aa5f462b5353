"""The gateway-wide budget for bytes held in unfinished and queued messages.

A client may send the first fragments of a message (or the first bytes of one
large frame) and never the rest; each such message may be up to
``max_message_bytes`` and rtgate must hold it until it completes. Every client
connection's reader (:class:`rtgate.net.fastframes.MessageReader`) reports
what it holds here whenever that changes (a partial frame or fragment arrived,
a message completed), and the relay adds the batches it holds while their
write to the other side waits (queued). Over ``limit``, the holder of the
biggest unfinished message is evicted: its message is dropped at once and its
session is closed (1013, with an ``error`` event first). Sessions within the
budget are untouched.

The hot path pays nothing for this: a reader reports only when what it holds
changes, which complete unfragmented frames (almost all of them) never do.
"""

from __future__ import annotations

from typing import Protocol


class Holder(Protocol):
    """What holds an unfinished message: how many bytes, and how to drop it."""

    held: int

    def evict(self) -> None:
        """Drop the held message (reporting 0 here) and have the session closed."""


class BufferBudget:
    """Bytes held across the gateway, who holds unfinished ones, and the limit over them."""

    __slots__ = ("evictions", "held", "holders", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        """Bytes allowed (None: no bound)."""
        self.held = 0
        """Bytes held now, unfinished and queued."""
        self.holders: dict[Holder, None] = {}
        """The holders of unfinished messages (an insertion-ordered set)."""
        self.evictions = 0

    def change(self, holder: Holder, before: int, after: int) -> None:
        """``holder`` now holds ``after`` bytes of unfinished messages instead of ``before``."""
        self.held += after - before
        if after and not before:
            self.holders[holder] = None
        elif before and not after:
            self.holders.pop(holder, None)
        if after > before:
            self.enforce()

    def queue(self, size: int) -> None:
        """``size`` more bytes wait for a write (the caller subtracts them from ``held``
        once written)."""
        self.held += size
        limit = self.limit
        if limit is not None and self.held > limit:
            self.enforce()

    def enforce(self) -> None:
        """Evict the biggest unfinished messages until the total is within the limit."""
        limit = self.limit
        while limit is not None and self.held > limit and self.holders:
            victim = max(self.holders, key=_held)
            self.evictions += 1
            victim.evict()
            self.holders.pop(victim, None)  # in case it reported nothing


def _held(holder: Holder) -> int:
    return holder.held
