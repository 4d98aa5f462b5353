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


def scan_head(buf: bytes | bytearray, limits: HeadLimits = HEAD_LIMITS) -> int | Refusal | None:
    """Where the head in ``buf`` ends (the offset after its blank line), a refusal, or None (more).

    Bytes after the head (a body, or frames sent early) are not looked at.
    """
    start = 0
    index = 0  # 0: the request line; 1..: header lines
    while True:
        end = buf.find(b"\n", start)
        if end < 0:
            cr = buf.find(b"\r", start)
            if 0 <= cr < len(buf) - 1:  # a CR followed by something other than LF
                return _bare_cr()
            partial = len(buf) - start
            if partial > limits.max_line + 1:  # + 1: its CR may be the next byte
                return _line_too_long(index, limits)
            if len(buf) > limits.max_total:
                return _head_too_large(limits)
            return None
        if end == start or buf[end - 1] != 0x0D:
            return Refusal(400, "bare_lf", "malformed HTTP request: a line ends in LF without CR")
        if buf.find(b"\r", start, end - 1) >= 0:
            return _bare_cr()
        length = end - 1 - start
        if length > limits.max_line:
            return _line_too_long(index, limits)
        if end + 1 > limits.max_total:
            return _head_too_large(limits)
        if length == 0:
            if index == 0:
                return Refusal(400, "empty_request_line", "malformed HTTP request: no request line")
            return end + 1
        if index > limits.max_headers:
            return Refusal(
                431,
                "too_many_headers",
                f"request has more than {limits.max_headers} header fields",
            )
        index += 1
        start = end + 1


def _bare_cr() -> Refusal:
    # RFC 9112 2.2: a bare CR is invalid; refusing it beats guessing what a proxy made of it.
    return Refusal(400, "bare_cr", "malformed HTTP request: a CR not followed by LF")


def _line_too_long(index: int, limits: HeadLimits) -> Refusal:
    if index == 0:
        return Refusal(414, "uri_too_long", f"request line longer than {limits.max_line} bytes")
    return Refusal(
        431, "header_line_too_long", f"a header line is longer than {limits.max_line} bytes"
    )


def _head_too_large(limits: HeadLimits) -> Refusal:
    return Refusal(431, "head_too_large", f"request head larger than {limits.max_total} bytes")
