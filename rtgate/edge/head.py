"""The request head's limits, checked once at the front for both planes.

Pure: :func:`scan_head` looks at the bytes read so far and says whether the
head is complete (and where it ends), still arriving, or refused with an HTTP
status. The same numbers hold for the data plane (where the ``websockets``
parser would refuse a head with more than 128 headers or an 8 KiB line) and the
control plane, so neither library ever sees a head the front let through that
it then refuses.

* more than ``max_headers`` header lines, a header line over ``max_line`` bytes,
  or a head over ``max_total`` bytes: 431 Request Header Fields Too Large;
* a request line over ``max_line`` bytes: 414 URI Too Long (RFC 9110 15.5.15);
* a line ending in a bare LF, or a CR not followed by LF: 400 at once. RFC 9112 2.2 lets a server accept
  it, but front proxies disagree on it (a request-smuggling lever), and the
  ``websockets`` parser refuses it, so rtgate refuses it for both planes.

Each limit is checked on the bytes read so far, so an oversized head is
refused as soon as it is oversized, not when it ends.
"""

from __future__ import annotations

import attrs

# websockets.http11 reads lines of at most 8192 bytes including CRLF and at most
# 128 headers: the front's numbers are the same, so the library never refuses first.
MAX_HEADERS = 128
MAX_LINE = 8190
MAX_HEAD = 32 * 1024


@attrs.frozen
class HeadLimits:
    """The numbers both planes share."""

    max_headers: int = MAX_HEADERS
    """Header lines per request head."""
    max_line: int = MAX_LINE
    """Bytes per line, CRLF excluded (request line and header lines)."""
    max_total: int = MAX_HEAD
    """Bytes of the whole head, up to and including the blank line."""


@attrs.frozen
class Refusal:
    """A head refused before any plane saw it."""

    status: int
    reason: str
    """A fixed word for logs and metrics: ``too_many_headers``, ``line_too_long``, ..."""
    message: str
    """What the client is told (in the JSON body)."""


HEAD_LIMITS = HeadLimits()


def scan_head(buf: bytes | bytearray, limits: HeadLimits | None = None) -> int | Refusal | None:
    """Where the head in ``buf`` ends (the offset after its blank line), a refusal, or None (more).

    The answer is the one due at the first byte that decides it, so it does not
    depend on how the bytes were cut into reads. Bytes after the head (a body,
    frames sent early) are not looked at.
    """
    limits = HEAD_LIMITS if limits is None else limits
    size = len(buf)
    start = 0
    index = 0  # 0: the request line; 1..: header lines
    while True:
        end = buf.find(b"\n", start)
        complete = end >= 0
        line_end = end if complete else size  # the line's bytes before its LF (or so far)
        # (position of the byte that decides it, refusal): the earliest one wins.
        found: list[tuple[int, Refusal]] = []
        cr = buf.find(b"\r", start, line_end)
        if 0 <= cr < line_end - 1:  # a CR followed by something other than LF
            found.append((cr + 1, _BARE_CR))
        if line_end - start > limits.max_line + 1:  # + 1: the line's CR
            found.append((start + limits.max_line + 1, _line_too_long(index, limits)))
        if limits.max_total < (end + 1 if complete else size):
            found.append((limits.max_total, _head_too_large(limits)))
        if complete:
            if end == start or buf[end - 1] != 0x0D:
                found.append((end, _BARE_LF))
            elif end - start == 1 and index == 0:
                found.append((end, _EMPTY_REQUEST_LINE))
            elif end - start > 1 and index > limits.max_headers:
                found.append((end, _too_many_headers(limits)))
        if found:
            return min(found, key=lambda candidate: candidate[0])[1]
        if not complete:
            return None
        if end - start == 1:  # the blank line
            return end + 1
        index += 1
        start = end + 1


# RFC 9112 2.2: a bare CR is invalid; refusing it beats guessing what a proxy made of it.
_BARE_CR = Refusal(400, "bare_cr", "malformed HTTP request: a CR not followed by LF")
_BARE_LF = Refusal(400, "bare_lf", "malformed HTTP request: a line ends in LF without CR")
_EMPTY_REQUEST_LINE = Refusal(400, "empty_request_line", "malformed HTTP request: no request line")


def _too_many_headers(limits: HeadLimits) -> Refusal:
    return Refusal(
        431, "too_many_headers", f"request has more than {limits.max_headers} header fields"
    )


def _line_too_long(index: int, limits: HeadLimits) -> Refusal:
    if index == 0:
        return Refusal(414, "uri_too_long", f"request line longer than {limits.max_line} bytes")
    return Refusal(
        431, "header_line_too_long", f"a header line is longer than {limits.max_line} bytes"
    )


def _head_too_large(limits: HeadLimits) -> Refusal:
    return Refusal(431, "head_too_large", f"request head larger than {limits.max_total} bytes")
