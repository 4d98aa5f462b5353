"""etc/grafana-dashboard.json and etc/prometheus-alerts.yaml only name series rtgate serves.

A gateway with traces and an event log on runs a session with a spoken response;
every metric the dashboard and the alert rules query must then be in its /metrics
output, with every label they filter or group by.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
from ruamel.yaml import YAML

from rtgate.config.load import parse_text
from rtgate.telemetry.eventlog import EventLogger
from rtgate.testing.gateway import open_gateway
from rtgate.testing.otlp_receiver import OtlpReceiver
from tests.conftest import CLIENT_KEY
from tests.governance_support import api
from tests.test_ops_support import free_port, http_get
from tests.wsclient import connect, raw_handshake, recv_json, recv_until, send_json

ETC = Path(__file__).resolve().parent.parent / "etc"
METRIC = re.compile(r"\b(rtgate_[a-z0-9_]+)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((ETC / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    rules = YAML(typ="safe").load((ETC / "prometheus-alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_files_are_well_formed() -> None:
    dashboard = json.loads((ETC / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}" and panel["targets"]
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "Tokens per second by model group", "USD per hour by model group",
        "Tokens per second by deployment", "USD per hour by deployment",
        "Tokens per second by key alias", "USD per hour by key alias",
        "Top keys by spend today",
    } <= titles  # fmt: skip
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "RtgatePoolNoUsableDeployment",
        "RtgateErrorCloseRate",
        "RtgateSlowFirstAudio",
        "RtgateEventLogDrops",
        "RtgateKeyNearBudget",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["for"]


async def _served_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> dict[str, set[str]]:
    receiver = OtlpReceiver()
    await nursery.start(receiver.serve)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base_url)
    text = f"""
model_list:
  - model_name: mock
    litellm_params: {{model: mock/gpt-realtime, reply_audio_ms: 100}}
    model_info: {{input_cost_per_token: 1.0e-6, output_cost_per_token: 2.0e-6,
                 input_cost_per_audio_token: 1.0e-5, output_cost_per_audio_token: 2.0e-5}}
  - model_name: broken
    litellm_params: {{model: openai/gpt-realtime, api_key: sk-x, api_base: "ws://127.0.0.1:{free_port()}/v1"}}
litellm_settings: {{callbacks: [otel]}}
general_settings: {{master_key: {CLIENT_KEY}}}
rtgate:
  event_log:
    sinks: [{{type: file, path: {tmp_path / "events.jsonl"}}}]
"""
    config = parse_text(text, path="<test>", env={}).config
    series: dict[str, set[str]] = {}
    with trio.fail_after(20):
        async with open_gateway(config, event_log=EventLogger.for_config(config)) as gw:
            # A budgeted database key runs the priced session (spend, tokens, budget series).
            status, created = await api(
                gw.http_url, "POST", "/key/generate", {"key_alias": "team-a", "max_budget": 5}
            )
            assert status == 200, created
            headers = {"Authorization": f"Bearer {created['key']}"}
            async with connect(gw.ws_url + "/v1/realtime?model=mock", headers) as ws:
                await recv_json(ws)
                await send_json(ws, {"type": "response.create"})
                await recv_until(ws, "response.done")
            # A dial that fails (connect failure, 503) and a handshake for no model (404).
            assert (await raw_handshake(gw.ws_url + "/v1/realtime?model=broken", headers))[0] == 503
            assert (await raw_handshake(gw.ws_url + "/v1/realtime?model=nope", headers))[0] == 404
            while gw.gateway.counters.sessions_active:
                await trio.sleep(0.01)
            status, body = await http_get(gw.port, "/metrics")
            assert status == 200
            text = body.decode()
            assert created["key"] not in text and created["token_id"] not in text
            assert 'rtgate_key_max_budget_usd{key_alias="team-a"} 5.0' in text
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


async def test_every_series_the_dashboard_and_alerts_use_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> None:
    served = await _served_series(tmp_path, monkeypatch, nursery)
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    checked = 0
    for expr in exprs:
        metrics = METRIC.findall(expr)
        assert metrics, expr
        grouped = {
            g.strip() for part in GROUPING.findall(expr) for g in part.split(",") if g.strip()
        }
        for name, matchers in metrics:
            assert name in served, f"{name} (in {expr!r}) is not in /metrics"
            labels = served[name]
            for label in MATCHER.findall(matchers):
                assert label in labels, f"{name} has no label {label!r} ({expr!r})"
            checked += 1
        for label in grouped - {"le"}:
            assert any(label in served[name] for name, _ in metrics), (label, expr)
    assert checked >= 30
