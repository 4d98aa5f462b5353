"""Shared fixtures: fake upstreams on 127.0.0.1 and a gateway config builder."""

from __future__ import annotations

import pytest
import trio

from rtgate.testing.fake_upstream import FakeRealtimeServer

CLIENT_KEY = "sk-client-test-key-000000"
UPSTREAM_KEY = "sk-fake-upstream-key"


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's gateways keep their embedded database (keys, spend) in a fresh directory."""
    monkeypatch.setenv("RTGATE_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
async def fake_openai(nursery: trio.Nursery) -> FakeRealtimeServer:
    server = FakeRealtimeServer(api_key=UPSTREAM_KEY)
    await nursery.start(server.serve)
    return server


def gateway_yaml(
    *deployments: str, extra: str = "", limits: str = "    connect_timeout: 2\n    ping_interval: 0"
) -> str:
    """A config with a master key, the given ``model_list`` entries (YAML snippets) and limits."""
    body = "\n".join(deployments)
    return f"""
model_list:
{body}
general_settings:
  master_key: {CLIENT_KEY}
rtgate:
  limits:
{limits}
{extra}
"""


def openai_deployment(
    name: str,
    base_url: str,
    *,
    key: str = UPSTREAM_KEY,
    extra: str = "",
    deployment_id: str | None = None,
) -> str:
    """A ``model_list`` entry; ``extra``: more ``litellm_params`` lines."""
    id_line = f"\n      id: {deployment_id}" if deployment_id is not None else ""
    return f"""  - model_name: {name}
    litellm_params:
      model: openai/gpt-realtime
      api_key: {key}
      api_base: {base_url}
{extra}
    model_info:
      mode: realtime{id_line}"""
