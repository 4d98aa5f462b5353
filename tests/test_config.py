"""The config loader: LiteLLM's format, clear errors with lines, warnings, secrets hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from rtgate.cli import cli
from rtgate.config.model import Secret
from rtgate.edge.configfile import load_config, parse_text
from rtgate.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

LITELLM_STYLE = """
model_list:
  - model_name: gpt-realtime
    litellm_params:
      model: openai/gpt-realtime
      api_key: os.environ/OPENAI_API_KEY
      weight: 3
      max_parallel_requests: 10
    model_info:
      mode: realtime
  - model_name: gpt-realtime
    litellm_params:
      model: azure/my-deploy
      api_base: https://res.openai.azure.com
      api_key: os.environ/AZURE_KEY
      api_version: "2025-04-01-preview"
      rpm: 60
    model_info:
      mode: realtime
      id: azure-east
general_settings:
  master_key: os.environ/MASTER
  database_type: dynamo_db
litellm_settings:
  logged_real_time_event_types: "*"
  drop_params: true
router_settings:
  routing_strategy: least-busy
  num_retries: 2
  fallbacks: [{gpt-realtime: [gpt-realtime]}]
  redis_host: somewhere
"""

ENV = {
    "OPENAI_API_KEY": "sk-openai-secret-value",
    "AZURE_KEY": "azure-secret-value",
    "MASTER": "sk-master-1234",
}


def test_litellm_config_loads_with_env_and_defaults() -> None:
    result = parse_text(LITELLM_STYLE, env=ENV)
    config = result.config
    first, second = config.deployments
    assert (first.provider, first.model, first.weight, first.max_parallel_requests) == (
        "openai",
        "gpt-realtime",
        3.0,
        10,
    )
    assert first.api_key == Secret("sk-openai-secret-value")
    assert second.id == "azure-east" and second.rpm == 60
    assert config.master_key is not None and config.master_key.value == "sk-master-1234"
    assert config.event_log.event_types is None  # "*"
    assert config.router.routing_strategy == "least-busy"
    assert config.router.num_retries == 2
    assert config.router.fallbacks == {"gpt-realtime": ("gpt-realtime",)}
    assert list(config.groups()) == ["gpt-realtime"]
    # LiteLLM keys rtgate ignores warn with their line; spending and security ones first.
    assert any("redis_host" in w and ":31:" in w for w in result.warnings)
    assert any("drop_params" in w and ":26:" in w for w in result.warnings)
    assert result.warnings[0].startswith("<config>:23: WARNING: NOT ENFORCED")
    assert "general_settings.database_type" in result.warnings[0]


def test_secrets_never_in_repr() -> None:
    config = parse_text(LITELLM_STYLE, env=ENV).config
    text = repr(config)
    for secret in ENV.values():
        assert secret not in text


def test_default_event_types_are_litellm_seed() -> None:
    config = parse_text(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/x\n"
    ).config
    assert config.event_log.event_types == frozenset(
        {"session.created", "response.create", "response.done"}
    )


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_key: os.environ/NOPE\n",
            5,
            "NOPE is not set",
        ),
        (
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: nowhere/x\n",
            4,
            "provider one of",
        ),
        (
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/x\n      weight: heavy\n",
            5,
            "weight must be a number",
        ),
        (
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/x\n      weight: -1\n",
            5,
            "must be >= 0",
        ),
        ("model_list: []\n", 1, "non-empty"),
        (
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/x\nrouter_settings:\n  routing_strategy: fastest\n",
            6,
            "routing_strategy",
        ),
        (
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n",
            2,
            "api_key",
        ),
        ("model_list: [\n", 2, "invalid YAML"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_text(text, path="conf.yaml", env={})
    message = str(info.value)
    assert message.startswith(f"conf.yaml:{line}:"), message
    assert needle in message


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "model_list",
                        "model_name",
                        "litellm_params",
                        "model",
                        "weight",
                        "rtgate",
                        "limits",
                        "router_settings",
                        "keys",
                        "x",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_loader_fuzz_only_clean_config_errors(data: object) -> None:
    """Arbitrary YAML-shaped data gives a config or a ConfigError, never a traceback."""
    import io

    from ruamel.yaml import YAML

    buffer = io.StringIO()
    YAML().dump({"root": data}, buffer)
    text = buffer.getvalue().replace("root:", "model_list:", 1)
    try:
        parse_text(text, env={})
    except ConfigError:
        pass


def test_shipped_config_is_valid_and_serves_mock() -> None:
    result = load_config(REPO / "etc" / "config.yaml", env={})
    assert [d.provider for d in result.config.deployments] == ["mock"]
    assert result.config.server.host == "127.0.0.1"


def test_cli_check_prints_groups_with_masked_secrets(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(LITELLM_STYLE.replace("os.environ/OPENAI_API_KEY", "sk-literal-secret-abcdef"))
    runner = CliRunner()
    result = runner.invoke(cli, ["check", "-c", str(path)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "model gpt-realtime" in result.output
    assert "openai/gpt-realtime" in result.output
    assert "sk-literal-secret-abcdef" not in result.output
    assert "plain text" in result.output  # the literal key is flagged


def test_cli_check_fails_with_location(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model_list:\n  - model_name: m\n    litellm_params:\n      model: bogus\n")
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 1
    assert f"{path}:4:" in result.output


def test_cli_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "rtgate" in result.output


def test_bad_event_log_sink_is_a_config_error_with_line() -> None:
    text = "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/x\nrtgate:\n  event_log:\n    sinks:\n      - type: kafka\n"
    with pytest.raises(ConfigError) as info:
        parse_text(text, path="c.yaml", env={})
    assert str(info.value).startswith("c.yaml:7:")
    assert "type must be one of" in str(info.value)


def test_sink_headers_not_in_repr() -> None:
    text = (
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/x\n"
        "rtgate:\n  event_log:\n    sinks:\n      - type: http\n        url: http://127.0.0.1:9/\n"
        "        headers: {Authorization: Bearer sk-sink-token-123456}\n"
    )
    config = parse_text(text, env={}).config
    assert "sk-sink-token-123456" not in repr(config)


@pytest.mark.parametrize(
    ("model", "library", "extra"),
    [("bedrock/amazon.nova-2-sonic-v1:0", "botocore", "bedrock"),
     ("vertex_ai/gemini-live", "cryptography", "vertex")],
)  # fmt: skip
def test_a_provider_whose_extra_is_missing_names_the_extra(
    model: str, library: str, extra: str
) -> None:
    # A fresh interpreter where the library cannot be imported, as in a default install.
    code = (
        "import sys\n"
        f"sys.modules[{library!r}] = None\n"
        "from rtgate.edge.configfile import parse_text\n"
        "from rtgate.errors import ConfigError\n"
        "text = 'model_list:\\n  - model_name: m\\n    litellm_params:\\n"
        f"      model: {model}\\n      aws_region_name: us-east-1\\n'\n"
        "try:\n"
        "    parse_text(text, path='c.yaml', env={})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.startswith("c.yaml:2:"), result.stdout + result.stderr
    assert f"pip install 'rtgate[{extra}]'" in result.stdout
