"""The relay as a stream end to end: order with pings between, frames bigger than a read.

An echo upstream (it greets with ``session.created``, then returns every
text message as it came) sits behind the gateway, so anything the relay
reorders, splits, merges or loses shows up as a difference.
"""

from __future__ import annotations

from functools import partial

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY, gateway_yaml, openai_deployment
from tests.test_faults_support import sessions_idle
from tests.wsclient import connect, recv_json

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


class EchoUpstream:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async def handler(request: WebSocketRequest) -> None:
            ws = await request.accept()
            await ws.send_message(orjson.dumps({"type": "session.created"}).decode())
            try:
                while True:
                    message = await ws.get_message()
                    assert isinstance(message, str)
                    self.received.append(message)
                    await ws.send_message(message)
            except ConnectionClosed:
                pass  # the gateway ended the session

        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, max_message_size=1 << 24), handler, "127.0.0.1", 0, None
            )
            task_status.started(server.port)


async def _gateway_with_echo(nursery: trio.Nursery) -> tuple[EchoUpstream, str]:
    echo = EchoUpstream()
    port = await nursery.start(echo.serve)
    return echo, openai_deployment("echo", f"ws://127.0.0.1:{port}/v1")


async def test_messages_keep_their_order_with_pings_between(nursery: trio.Nursery) -> None:
    echo, deployment = await _gateway_with_echo(nursery)
    with trio.fail_after(20):
        async with open_gateway(gateway_yaml(deployment)) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=echo", AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                sent = [
                    orjson.dumps({"type": "input_audio_buffer.append", "n": i}).decode()
                    for i in range(400)
                ]
                got: list[str | bytes] = []

                async def read_all() -> None:
                    for _ in sent:
                        got.append(await ws.get_message())

                async with trio.open_nursery() as readers:
                    readers.start_soon(read_all)
                    for i, message in enumerate(sent):
                        await ws.send_message(message)
                        if i % 50 == 0:
                            await ws.ping()  # rtgate answers it between data frames
            assert got == sent
            assert echo.received == sent


async def test_frames_larger_than_one_read_arrive_whole(nursery: trio.Nursery) -> None:
    echo, deployment = await _gateway_with_echo(nursery)
    big = orjson.dumps({"type": "input_audio_buffer.append", "audio": "QUJD" * 60_000}).decode()
    with trio.fail_after(20):
        async with open_gateway(gateway_yaml(deployment)) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=echo", AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                got: list[str | bytes] = []

                async def read_all() -> None:
                    for _ in range(5):
                        got.append(await ws.get_message())

                async with trio.open_nursery() as readers:
                    readers.start_soon(read_all)
                    for _ in range(5):
                        await ws.send_message(big)  # 240 KB: several 64 KiB reads each
            assert got == [big] * 5
            assert echo.received == [big] * 5


async def test_a_client_close_mid_stream_ends_the_session_cleanly(nursery: trio.Nursery) -> None:
    _echo, deployment = await _gateway_with_echo(nursery)
    with trio.fail_after(20):
        async with open_gateway(gateway_yaml(deployment)) as gw:
            for _ in range(20):
                async with connect(gw.ws_url + "/v1/realtime?model=echo", AUTH) as ws:
                    assert (await recv_json(ws))["type"] == "session.created"
                    await ws.send_message('{"type":"input_audio_buffer.append"}')
                    assert await ws.get_message() == '{"type":"input_audio_buffer.append"}'
                    await ws.send_message('{"type":"input_audio_buffer.commit"}')
            await sessions_idle(gw)
            assert gw.gateway.counters.close_codes == {1000: 20}
