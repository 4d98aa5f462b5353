"""``rtgate.webrtc`` in the config file: defaults, ICE servers, errors with their line."""

from __future__ import annotations

import pytest

from rtgate.config.model import WebRtcSettings
from rtgate.edge.configfile import parse_text
from rtgate.errors import ConfigError

BASE = """model_list:
  - model_name: m
    litellm_params: {model: mock/gpt-realtime}
rtgate:
  webrtc:
"""


def load(webrtc: str, env: dict[str, str] | None = None) -> tuple[WebRtcSettings, list[str]]:
    result = parse_text(BASE + webrtc, path="cfg.yaml", env=env or {})
    return result.config.webrtc, result.warnings


def test_defaults_and_every_key() -> None:
    settings, _ = load("    {}\n")
    assert settings == WebRtcSettings()
    settings, warnings = load(
        """    idle_timeout: 4
    max_calls: 7
    answer_timeout: 2.5
    output_buffer_seconds: 30
    ice_servers:
      - urls: stun:stun.example.org:3478
      - urls: [turn:turn.example.org:3478?transport=udp, turns:turn.example.org:5349]
        username: rtgate
        credential: os.environ/TURN_PASSWORD
    colour: blue
""",
        env={"TURN_PASSWORD": "turn-secret-value"},
    )
    assert (settings.idle_timeout, settings.max_calls) == (4.0, 7)
    assert (settings.answer_timeout, settings.output_buffer_seconds) == (2.5, 30.0)
    stun, turn = settings.ice_servers
    assert stun.urls == ("stun:stun.example.org:3478",) and stun.credential is None
    assert turn.username == "rtgate" and turn.credential is not None
    assert turn.credential.value == "turn-secret-value"
    assert "turn-secret-value" not in repr(settings)
    assert any("cfg.yaml:15" in w and "colour" in w for w in warnings), warnings


def test_a_turn_credential_is_scrubbed_like_every_secret() -> None:
    result = parse_text(
        BASE
        + """    ice_servers:
      - {urls: "turn:t.example:3478", username: u, credential: os.environ/TURN}
""",
        path="cfg.yaml",
        env={"TURN": "turn-secret-value"},
    )
    assert "turn-secret-value" in result.config.secret_values()


@pytest.mark.parametrize(
    ("webrtc", "line", "message"),
    [
        ("    ice_servers: stun:x\n", 6, "must be a list"),
        ("    ice_servers:\n      - username: u\n", 7, "needs urls"),
        ("    ice_servers:\n      - urls: http://x\n", 7, "is not a stun:"),
        ("    ice_servers:\n      - urls: turn:t:3478\n", 7, "needs username and credential"),
        ("    idle_timeout: 0\n", 6, "idle_timeout must be > 0"),
        ("    max_calls: -1\n", 6, "max_calls must be >= 0"),
        ("    idle_timeout: soon\n", 6, "must be a number"),
        ("    udp_ports: 40999-40000\n", 6, "udp_ports must be FIRST-LAST"),
        ("    udp_ports: 80-90\n", 6, "udp_ports must be FIRST-LAST"),
        ("    udp_ports: lots\n", 6, "udp_ports must be FIRST-LAST"),
        ("    udp_ports: [1, 2, 3]\n", 6, "udp_ports must be FIRST-LAST"),
    ],
)
def test_errors_name_the_line(webrtc: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(webrtc)
    text = str(caught.value)
    assert f"cfg.yaml:{line}" in text and message in text, text


@pytest.mark.parametrize("written", ["40000-40009", "[40000, 40009]", "' 40000 - 40009 '"])
def test_a_udp_port_range_in_either_form(written: str) -> None:
    settings, _ = load(f"    udp_ports: {written}\n")
    assert settings.udp_ports == (40000, 40009)


def test_the_call_loop_binds_any_port_requests_inside_the_range() -> None:
    """aioice asks for port 0; the loop answers from the range, skipping ports in use, and
    says so when the range is exhausted."""
    import asyncio
    import errno
    import socket

    from rtgate.webrtc.loop import PortRangeLoop

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    first = taken.getsockname()[1]
    # A three-port range whose first port is in use: two binds succeed, the third fails.
    loop = PortRangeLoop((first, first + 2))

    async def bind_all() -> tuple[list[int], OSError | None]:
        ports: list[int] = []
        transports = []
        failure: OSError | None = None
        try:
            for _ in range(3):
                transport, _protocol = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
                )
                transports.append(transport)
                ports.append(transport.get_extra_info("sockname")[1])
        except OSError as exc:
            failure = exc
        for transport in transports:
            transport.close()
        return ports, failure

    try:
        ports, failure = loop.run_until_complete(bind_all())
    finally:
        loop.close()
        taken.close()
    assert ports == [first + 1, first + 2]
    assert failure is not None and failure.errno == errno.EADDRINUSE
    assert f"{first}-{first + 2}" in str(failure)
