"""The relay over in-memory streams: translator failures stay inside their session."""

from __future__ import annotations

import orjson
import trio
import trio.testing
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import OPEN, Side
from websockets.protocol import Protocol as WsProtocol

from rtgate.config.model import Limits
from rtgate.net.wsconn import WsConnection
from rtgate.providers.mock import NullLink
from rtgate.session.relay import Relay
from rtgate.translate.base import Outbox, Translator
from rtgate.wire import Frame as Message


class _Exploding(Translator):
    def on_client(self, frame: Message, out: Outbox, now: float) -> None:
        raise KeyError("a bug")


async def test_translator_exception_becomes_error_event_and_1011() -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    client_conn = WsConnection(server_stream, WsProtocol(Side.SERVER, state=OPEN))
    peer = WsProtocol(Side.CLIENT, state=OPEN)
    relay = Relay(client_conn, NullLink(), _Exploding(), limits=Limits(ping_interval=0))
    peer.send_text(b'{"type":"session.update"}')
    await client_stream.send_all(b"".join(peer.data_to_send()))
    frames: list[Frame] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            while not any(f.opcode is Opcode.CLOSE for f in frames):
                peer.receive_data(await client_stream.receive_some(65536))
                frames += [e for e in peer.events_received() if isinstance(e, Frame)]
            await client_stream.send_all(b"".join(peer.data_to_send()))  # close echo
    texts = [orjson.loads(f.data) for f in frames if f.opcode is Opcode.TEXT]
    assert texts[-1]["type"] == "error" and texts[-1]["error"]["code"] == "translation_error"
    close = Close.parse(next(f.data for f in frames if f.opcode is Opcode.CLOSE))
    assert close.code == 1011
    assert relay.outcome is not None and relay.outcome.client_code == 1011
