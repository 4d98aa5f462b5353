"""``rtgate db upgrade`` and ``rtgate keys create|list|revoke`` against the database a running
gateway uses: a created key works there, a revoked one is refused within the refresh."""

from __future__ import annotations

from pathlib import Path

import trio
from click.testing import CliRunner

from rtgate.cli import cli
from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.governance_support import priced_config, sdk_session_open, wait_for


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def test_cli_keys_against_a_running_gateway(
    fake_openai: FakeRealtimeServer, tmp_path: Path
) -> None:
    text = priced_config(fake_openai.base_url, database=f"sqlite:///{tmp_path}/keys.db")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    upgraded = await trio.to_thread.run_sync(_run, "db", "upgrade", "-c", str(path))
    assert "schema version 1 (applied 1)" in upgraded
    with trio.fail_after(40):
        async with open_gateway(text) as gw:
            out = await trio.to_thread.run_sync(
                _run, "keys", "create", "-c", str(path), "--alias", "ops", "--max-budget", "5",
                "--budget-duration", "30d", "--models", "gpt-realtime",
            )  # fmt: skip
            key = out.strip()
            assert key.startswith("sk-")
            listed = await trio.to_thread.run_sync(_run, "keys", "list", "-c", str(path))
            assert "ops" in listed and "$0.0000/5" in listed and key not in listed
            url = gw.ws_url + "/v1"
            assert (await trio.to_thread.run_sync(sdk_session_open, url, key))["status"] == 101
            revoked = await trio.to_thread.run_sync(_run, "keys", "revoke", "-c", str(path), "ops")
            assert "deleted ops" in revoked

            async def refused() -> bool:
                return bool((await trio.to_thread.run_sync(sdk_session_open, url, key))["status"]
                            == 401)  # fmt: skip

            await wait_for(refused, timeout=5)


def test_cli_reports_a_bad_duration_and_an_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(priced_config("ws://127.0.0.1:9/v1", database=f"sqlite:///{tmp_path}/k.db"))
    path.chmod(0o600)
    bad = CliRunner().invoke(cli, ["keys", "create", "-c", str(path), "--duration", "soon"])
    assert bad.exit_code != 0 and "not a duration" in bad.output
    unknown = CliRunner().invoke(cli, ["keys", "revoke", "-c", str(path), "nobody"])
    assert unknown.exit_code == 1 and "no such key" in unknown.output
