"""The message types every layer shares: a WebSocket message as the relay carries it.

``bytes`` is a *text* message (UTF-8 JSON, as received or as ``orjson.dumps``
produces it, so passthrough never decodes); :class:`Binary` wraps a binary message.
For non-WebSocket upstreams (Bedrock) the upstream transport delivers and takes the
provider's event JSON as ``bytes`` in the same way.
"""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class Binary:
    """A binary WebSocket message (text messages are plain ``bytes``)."""

    data: bytes


Frame = bytes | Binary
