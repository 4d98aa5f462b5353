"""The LiteLLM seed client (Node ``ws``, beta header, beta response.create) works unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio

from rtgate.testing.gateway import open_gateway
from tests.conftest import CLIENT_KEY

NODE_DIR = Path(__file__).parent / "node"

CONFIG = f"""
model_list:
  - model_name: mock-realtime
    litellm_params:
      model: mock/gpt-realtime
      reply_audio_ms: 200
general_settings:
  master_key: {CLIENT_KEY}
"""


def _node_ready() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ws").is_dir()


@pytest.mark.skipif(
    not _node_ready(), reason="needs node and `npm install` in tests/node (.ci/run does it)"
)
async def test_node_ws_seed_client_gets_beta_text_events() -> None:
    with trio.fail_after(30):
        async with open_gateway(CONFIG) as gw:
            env = {
                **os.environ,
                "RTGATE_URL": gw.ws_url + "/v1/realtime?model=mock-realtime",
                "RTGATE_KEY": CLIENT_KEY,
            }
            result = await trio.run_process(
                ["node", str(NODE_DIR / "seed_client.js")],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    events = [line.split()[1] for line in out.splitlines() if line.startswith("EVENT ")]
    assert events[0] == "session.created"
    assert "response.text.delta" in events and "response.text.done" in events
    assert not any(e.startswith("response.output_text") for e in events), events
    assert events[-1] == "response.done"
    assert "CLOSED 1000" in out
