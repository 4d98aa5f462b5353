"""An error class's close code, type and code are what a client of a running session sees.

The relay ends sessions through one mapping (``Relay._end_by_gateway``) that reads the
class; the first test changes a class's close code and finds the change at the client,
so a hard-coded code anywhere on the way fails it.
"""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed

from rtgate.edge.server import ServerHandle
from rtgate.errors import GatewayShuttingDown, RtgateError, SessionExpired, SessionIdle
from rtgate.testing.gateway import open_gateway
from tests.test_ops_limits import AUTH, limits_yaml
from tests.test_ops_support import close_code
from tests.wsclient import connect, recv_json

ENDINGS = [
    (SessionExpired, "    max_session_seconds: 0.3"),
    (SessionIdle, "    idle_timeout: 0.3"),
    (GatewayShuttingDown, ""),
]


async def _ended_session(
    error: type[RtgateError], limits: str
) -> tuple[dict[str, object], int | None]:
    """Open a session, let ``error`` end it; the ``error`` event and the close code seen."""

    def end_it(gw: ServerHandle) -> None:
        if error is GatewayShuttingDown:
            gw.gateway.shutdown.set()  # what the drain sets when its time is up

    with trio.fail_after(10):
        async with open_gateway(limits_yaml(limits)) as gw:
            async with connect(gw.ws_url + "/v1/realtime?model=m", AUTH) as ws:
                assert (await recv_json(ws))["type"] == "session.created"
                end_it(gw)
                event = await recv_json(ws, timeout=3)
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
    return event, close_code(info.value)


@pytest.mark.parametrize(("error", "limits"), ENDINGS)
async def test_the_close_code_a_client_sees_is_the_error_classes(
    error: type[RtgateError], limits: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(error, "close_code", 4321)
    monkeypatch.setattr(error, "error_code", "changed_for_the_test")
    event, code = await _ended_session(error, limits)
    assert code == 4321
    assert event["type"] == "error"
    assert event["error"] == {
        "type": error.error_type,
        "code": "changed_for_the_test",
        "message": event["error"]["message"],  # type: ignore[index]
    }


@pytest.mark.parametrize(
    ("error", "limits", "expected"),
    [(SessionExpired, ENDINGS[0][1], 1000), (SessionIdle, ENDINGS[1][1], 1000),
     (GatewayShuttingDown, ENDINGS[2][1], 1001)],
)  # fmt: skip
async def test_limits_end_normally_and_a_drain_goes_away(
    error: type[RtgateError], limits: str, expected: int
) -> None:
    event, code = await _ended_session(error, limits)
    assert code == expected == error.close_code
    assert event["error"]["code"] == error.error_code  # type: ignore[index]
