"""Hypothesis over the config loader and ``rtgate check``: a config or a clean ConfigError.

Extends the shape fuzzing of ``test_config.py`` with raw text, realistic files
with one value mutated to anything, and the CLI on arbitrary files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from rtgate.cli import cli
from rtgate.edge.configfile import parse_text
from rtgate.errors import ConfigError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

REALISTIC = """
model_list:
  - model_name: gpt-realtime
    litellm_params:
      model: openai/gpt-realtime
      api_key: os.environ/OPENAI_API_KEY
      api_base: wss://api.openai.com/v1
      weight: 2
      max_parallel_requests: 10
      rpm: 60
      ssl_verify: true
    model_info:
      id: oa
      mode: realtime
  - model_name: gem
    litellm_params:
      model: gemini/gemini-live-2.5-flash
      api_key: os.environ/GEMINI_API_KEY
  - model_name: nova
    litellm_params:
      model: bedrock/amazon.nova-sonic-v1:0
      aws_region_name: us-east-1
      aws_access_key_id: os.environ/AWS_ID
      aws_secret_access_key: os.environ/AWS_SECRET
  - model_name: m
    litellm_params:
      model: mock/echo
general_settings:
  master_key: os.environ/MASTER
litellm_settings:
  logged_real_time_event_types: [session.created, response.done]
router_settings:
  routing_strategy: weighted-round-robin
  num_retries: 2
  allowed_fails: 3
  cooldown_time: 5
  fallbacks: [{gpt-realtime: [m]}]
rtgate:
  host: 127.0.0.1
  port: 4000
  allowed_origins: [https://app.example.com]
  keys:
    - alias: team
      key: os.environ/TEAM_KEY
      models: [gpt-realtime]
      max_sessions: 3
  limits:
    max_message_bytes: 1048576
    connect_timeout: 5
    handshake_timeout: 5
    idle_timeout: 60
    max_pending_bytes: 65536
  event_log:
    session_sample_rate: 0.5
    type_sample_rates: {response.output_audio.delta: 0.01}
    sinks:
      - type: file
        path: /tmp/rtgate-events.jsonl
"""
ENV = {"OPENAI_API_KEY": "a", "GEMINI_API_KEY": "b", "AWS_ID": "AKIAX", "AWS_SECRET": "s",
       "MASTER": "m", "TEAM_KEY": "t"}  # fmt: skip

anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["os.environ/MISSING", "os.environ/", "*", "-1", "0", "1e309", "nan",
                       "wss://", "mock/", "/", "true"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


_BASE = YAML(typ="safe").load(REALISTIC)
_PATHS = _paths(_BASE)


def _dump(data: object) -> str:
    buffer = io.StringIO()
    YAML().dump(data, buffer)
    return buffer.getvalue()


def test_the_realistic_base_config_loads() -> None:
    config = parse_text(REALISTIC, env=ENV).config
    assert len(config.deployments) == 4


@SETTINGS
@given(st.sampled_from(_PATHS), anything, st.booleans())
def test_one_mutated_value_gives_a_config_or_a_config_error(
    path: tuple[Any, ...], value: object, delete: bool
) -> None:
    data = YAML(typ="safe").load(REALISTIC)
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        text = _dump(data)
    except Exception:  # the YAML library cannot write some values (that is not our loader)
        return
    try:
        parse_text(text, path="fuzz.yaml", env=ENV)
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_text(text, path="t.yaml", env={})
    except ConfigError:
        pass


@SETTINGS
@given(st.lists(st.sampled_from(REALISTIC.splitlines()), max_size=40))
def test_shuffled_config_lines_give_a_config_or_a_config_error(lines: list[str]) -> None:
    try:
        parse_text("\n".join(lines), path="t.yaml", env=ENV)
    except ConfigError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_cli_check_never_shows_a_traceback(tmp_path_factory: Any, data: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "c.yaml"
    path.write_bytes(data)
    path.chmod(0o600)
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
