"""LiteLLM keys rtgate does not honour: each warns with file:line, the weakening ones first."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rtgate.cli import cli
from rtgate.config.litellm_keys import ROWS, UnhonouredKey
from rtgate.edge.configfile import parse_text

REPO = Path(__file__).resolve().parent.parent

DEPLOYMENT = "model_list:\n  - model_name: m\n    litellm_params:\n      model: mock/x\n"


def _placed(row: UnhonouredKey) -> tuple[str, int]:
    """A config with ``row``'s key where LiteLLM reads it, and the key's line."""
    if row.section == "litellm_params":
        return DEPLOYMENT + f"      {row.key}: 1\n", 5
    if row.section == "model_info":
        return DEPLOYMENT + f"    model_info:\n      {row.key}: 1\n", 6
    if row.section == "rtgate.keys":
        return DEPLOYMENT + f"rtgate:\n  keys:\n    - key: k-123\n      {row.key}: 1\n", 8
    if row.section == "":
        return DEPLOYMENT + f"{row.key}: 1\n", 5
    return DEPLOYMENT + f"{row.section}:\n  {row.key}: 1\n", 6


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name())
def test_every_unhonoured_key_warns_with_its_line_and_what_litellm_does(
    row: UnhonouredKey,
) -> None:
    text, line = _placed(row)
    result = parse_text(text, path="c.yaml", env={})
    mine = [w for w in result.warnings if row.name() in w]
    assert len(mine) == 1, result.warnings
    assert mine[0].startswith(f"c.yaml:{line}: ")
    assert row.litellm in mine[0]
    if row.weakens is not None:
        assert mine == result.not_enforced
        assert f"NOT ENFORCED ({row.weakens.value})" in mine[0]
    else:
        assert result.not_enforced == []


def test_weakening_keys_come_first_whatever_their_place_in_the_file() -> None:
    text = (
        DEPLOYMENT
        + "litellm_settings:\n  drop_params: true\n  callbacks: [langfuse, otel, s3]\n"
        + "general_settings:\n  database_type: dynamo_db\n  some_future_key: 1\n"
        + "router_settings:\n  timeout: 5\n  provider_budget_config: {}\n"
        + "guardrails:\n  - guardrail_name: pii\n"
    )
    result = parse_text(text, path="c.yaml", env={})
    loud = [
        "c.yaml:9:",
        "c.yaml:13:",
        "c.yaml:14:",
    ]  # database_type, provider_budget_config, guardrails
    assert [w.split(" ", 1)[0] for w in result.warnings[:3]] == loud
    assert result.not_enforced == result.warnings[:3]
    rest = " ".join(result.warnings[3:])
    for name in ("drop_params", "callbacks", "some_future_key", "router_settings.timeout"):
        assert name in rest
    assert "general_settings.some_future_key is not honoured by rtgate" in rest


def test_keys_rtgate_reads_do_not_warn() -> None:
    text = (
        DEPLOYMENT
        + "      rpm: 5\n      max_parallel_requests: 2\n"
        + "general_settings:\n  master_key: sk-abcdefgh\n"
        + "litellm_settings:\n  logged_real_time_event_types: '*'\n"
        + "router_settings:\n  num_retries: 1\n  allowed_fails: 2\n  cooldown_time: 3\n"
    )
    assert parse_text(text, env={}).warnings == []


def test_a_litellm_routing_strategy_loads_as_simple_shuffle_with_a_warning() -> None:
    text = DEPLOYMENT + "router_settings:\n  routing_strategy: usage-based-routing-v2\n"
    result = parse_text(text, path="c.yaml", env={})
    assert result.config.router.routing_strategy == "simple-shuffle"
    assert result.warnings == [
        "c.yaml:6: warning: router_settings.routing_strategy usage-based-routing-v2 is not "
        "implemented by rtgate: served as simple-shuffle (LiteLLM picks the deployment with "
        "the lowest tpm/rpm use (in Redis))"
    ]


def test_rtgate_check_lists_the_weakening_keys_first_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        DEPLOYMENT + "litellm_settings:\n  drop_params: true\n  max_budget: 100\nguardrails: []\n"
    )
    path.chmod(0o600)
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{path}:7: WARNING: NOT ENFORCED (spending control)")
    assert "litellm_settings.max_budget" in lines[0]
    assert lines[1].startswith(f"{path}:8: WARNING: NOT ENFORCED (security): guardrails")
    assert lines[2].startswith(f"{path}:6: warning: litellm_settings.drop_params")
    assert "2 LiteLLM setting(s) that limit access or spending" in lines[3]
    assert f"{path}: OK" in result.output


def test_the_migration_guide_names_every_unhonoured_key() -> None:
    guide = (REPO / "docs" / "litellm-migration.md").read_text(encoding="utf-8")
    missing = [row.name() for row in ROWS if f"`{row.name()}`" not in guide]
    assert missing == []
