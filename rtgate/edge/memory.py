"""The process's allocator settings: memory of large freed buffers goes back to the OS.

glibc's malloc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB by default)
with a mapping of its own, unmapped when freed. The threshold is dynamic: each
time such a block is freed, the threshold rises to that block's size (up to 32 MiB
on 64-bit) and the trim threshold to twice that (mallopt(3), "M_MMAP_THRESHOLD").
A gateway whose clients once sent multi-MiB messages therefore serves every later
block of that size from the heap, and a heap with live objects above the freed
space cannot shrink: 40 sessions holding 15 MiB each left the process at 650 MiB
after they had ended (``bench/held_messages.py``, ``docs/reliability.md``).

Setting either threshold explicitly turns the dynamic adjustment off. rtgate pins
both at glibc's own defaults (128 KiB), so a large message buffer is always its own
mapping and is returned when freed. The read buffer of the relay (64 KiB,
``rtgate.net.wsconn.READ_SIZE``) stays below it, so the hot path makes no extra
``mmap`` call. An operator's ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
(read by glibc at process start) win: rtgate then leaves that setting alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("rtgate.memory")

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 128 * 1024
"""Blocks at least this big are mappings of their own (glibc's default, pinned)."""
TRIM_THRESHOLD = 128 * 1024
"""Free memory at the heap's top beyond this is returned (glibc's default, pinned)."""

_SETTINGS = (
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (not musl)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def pin_malloc_thresholds(environ: dict[str, str] | None = None) -> list[str]:
    """Pin glibc's mmap and trim thresholds (see module docstring); the settings applied.

    Returns the names of the settings rtgate set (an operator's environment variable
    keeps its own). Nothing happens on a C library other than glibc.
    """
    env = os.environ if environ is None else environ
    libc = _glibc()
    if libc is None:
        log.debug("not glibc: malloc thresholds left as they are")
        return []
    applied: list[str] = []
    for variable, param, value in _SETTINGS:
        if variable in env:
            continue
        if libc.mallopt(param, value) == 1:
            applied.append(variable)
        else:
            log.warning("mallopt refused %s=%d", variable, value)
    return applied
