"""Server edges: TLS termination on the front, the open-port guard, control-plane routing."""

from __future__ import annotations

import ssl
from pathlib import Path

import orjson
import pytest
import trio
import trustme
from trio_websocket import open_websocket_url

from rtgate.edge.configfile import parse_text
from rtgate.edge.server import check_exposure
from rtgate.errors import ConfigError
from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY
from tests.test_ops_support import http_get

MOCK = """
model_list:
  - model_name: mock-realtime
    litellm_params:
      model: mock/gpt-realtime
      reply_audio_ms: 100
"""


def test_no_key_refuses_public_listen_address() -> None:
    config = parse_text(MOCK, env={}).config
    check_exposure(config, "127.0.0.1")  # loopback is fine
    with pytest.raises(ConfigError, match="refusing to listen"):
        check_exposure(config, "0.0.0.0")
    opted_in = parse_text(MOCK + "rtgate:\n  allow_unauthenticated: true\n", env={}).config
    check_exposure(opted_in, "0.0.0.0")
    keyed = parse_text(MOCK + f"general_settings:\n  master_key: {CLIENT_KEY}\n", env={}).config
    check_exposure(keyed, "0.0.0.0")


async def test_tls_termination_serves_wss_and_https(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    config = MOCK + f"rtgate:\n  tls_cert: {cert_path}\n  tls_key: {key_path}\n"
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with trio.fail_after(15):
        async with open_gateway(config) as gw:
            assert gw.ws_url.startswith("wss://")
            async with open_websocket_url(
                gw.ws_url + "/v1/realtime?model=mock-realtime", ssl_context=client_ctx
            ) as ws:
                assert orjson.loads(await ws.get_message())["type"] == "session.created"
            stream = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", gw.port, ssl_context=client_ctx
            )
            async with stream:
                await stream.send_all(
                    b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                data = b""
                while chunk := await stream.receive_some(4096):
                    data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b'"alive"' in data


async def test_control_plane_routes_share_the_port() -> None:
    with trio.fail_after(15):
        async with open_gateway(MOCK) as gw:
            for path, status in (
                ("/health/liveness", 200),
                ("/health/readiness", 200),
                ("/nope", 404),
            ):
                got, body = await http_get(gw.port, path)
                assert got == status, (path, body[:80])
