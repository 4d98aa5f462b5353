"""The status page at /ui: sign-in (form and cookie, Basic), its JSON, and a real browser.

The browser test runs headless Chromium against a gateway with a deployment that
refuses connections and a healthy one: after the pool ejects the broken one, the
page (rendered by the server, then refreshed by its script) must show it ejected,
and a key that ran a priced session must show its spend today.
"""

from __future__ import annotations

import base64
import time
from functools import partial
from pathlib import Path

import attrs
import orjson
import pytest
import trio

from rtgate.config.load import parse_text
from rtgate.governance.db import Database
from rtgate.governance.service import Governance, utc_midnight
from rtgate.spend.records import price_response
from rtgate.testing.fake_upstream import FakeRealtimeServer
from rtgate.testing.gateway import open_gateway
from tests.cdp import open_browser, require_chromium
from tests.conftest import CLIENT_KEY, gateway_yaml, openai_deployment
from tests.governance_support import priced_config, sdk_session
from tests.test_ops_support import free_port, http_get
from tests.wsclient import connect, recv_json

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def http_post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Connection: close",
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    answer = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), answer, rest


TEAM_KEY = "sk-team-voice-key-0000000000"


def _config(*deployments: str) -> str:
    return gateway_yaml(
        *deployments,
        extra=f"  keys:\n    - {{alias: team-voice, key: {TEAM_KEY}}}\n"
        "router_settings:\n  allowed_fails: 1\n  cooldown_time: 300\n"
        "  max_ejection_percent: 100\n",
    )


async def test_sign_in_with_the_form_sets_an_httponly_cookie(
    fake_openai: FakeRealtimeServer,
) -> None:
    with trio.fail_after(20):
        async with open_gateway(
            _config(openai_deployment("gpt-realtime", fake_openai.base_url))
        ) as gw:
            status, page = await http_get(gw.port, "/ui")
            assert status == 200 and b'action="/ui/login"' in page and b"Pool" not in page
            assert (await http_get(gw.port, "/ui/data.json"))[0] == 401
            assert (await http_get(gw.port, f"/ui/data.json?api-key={CLIENT_KEY}"))[0] == 401

            status, _, body = await http_post(gw.port, "/ui/login", b"key=wrong")
            assert status == 401 and b"not the master key" in body

            status, headers, _ = await http_post(gw.port, "/ui/login", f"key={CLIENT_KEY}".encode())
            assert status == 303 and headers["location"] == "/ui"
            cookie = headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
            assert CLIENT_KEY not in cookie
            token = cookie.split(";")[0]
            status, body = await http_get(gw.port, "/ui/data.json", {"Cookie": token})
            assert status == 200
            data = orjson.loads(body)
            assert data["spend_today"]["keys"] == [] and data["spend_today"]["from_database"]
            assert data["spend_today"]["since"] == time.time() // 86400 * 86400
            assert [d["deployment"] for d in data["pool"]] == [
                d.id for d in gw.gateway.config.deployments
            ]
            status, page = await http_get(gw.port, "/ui", {"Cookie": token})
            assert status == 200 and b"Recent closes" in page

            # A forged or altered cookie is refused; so is a stale one.
            expires, mac = token.split("=", 1)[1].split(".")
            for forged in (f"{int(expires) + 1}.{mac}", f"{expires}.{'0' * 64}", "1.abc"):
                status, _ = await http_get(
                    gw.port, "/ui/data.json", {"Cookie": f"rtgate_ui={forged}"}
                )
                assert status == 401, forged

            # HTTP Basic (any user name) and Bearer work for scripts.
            basic = base64.b64encode(f"ops:{CLIENT_KEY}".encode()).decode()
            assert (await http_get(gw.port, "/ui/data.json", {"Authorization": f"Basic {basic}"}))[
                0
            ] == 200
            assert (await http_get(gw.port, "/ui/data.json", AUTH))[0] == 200
            status, asset = await http_get(gw.port, "/ui/static/ui.js")
            assert status == 200 and b"/ui/data.json" in asset
            assert (await http_get(gw.port, "/ui/static/../app.py"))[0] == 404


async def test_browser_shows_the_failing_deployment_ejected(
    fake_openai: FakeRealtimeServer, tmp_path: Path
) -> None:
    require_chromium()
    refused = f"ws://127.0.0.1:{free_port()}/v1"
    config = _config(
        openai_deployment("gpt-realtime", refused, deployment_id="openai-broken"),
        openai_deployment("gpt-realtime", fake_openai.base_url, deployment_id="openai-healthy"),
    )
    with trio.fail_after(90):
        async with open_gateway(config) as gw:
            pool = gw.gateway.pool
            for _ in range(6):  # until the broken one has been tried and ejected
                async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as ws:
                    await recv_json(ws)
                if pool.statistics(trio.current_time())["openai-broken"]["state"] == "ejected":
                    break
            assert pool.statistics(trio.current_time())["openai-broken"]["state"] == "ejected"
            # A priced session (openai/gpt-realtime is in the shipped price table) of a key.
            usages = (
                await trio.to_thread.run_sync(partial(sdk_session, gw.ws_url + "/v1", TEAM_KEY))
            )["usages"]
            assert usages and usages[0]["total_tokens"] > 0
            async with connect(gw.ws_url + "/v1/realtime?model=gpt-realtime", AUTH) as live:
                await recv_json(live)
                async with open_browser(tmp_path) as page:
                    await page.goto(gw.http_url + "/ui")
                    assert await page.evaluate("!!document.getElementById('login')")
                    await page.evaluate(
                        f"document.getElementById('key').value = {orjson.dumps(CLIENT_KEY).decode()};"
                        "document.getElementById('login').submit()"
                    )
                    await page.wait_event("Page.loadEventFired")
                    while not await page.evaluate("Number(document.body.dataset.polled || 0) >= 1"):
                        await trio.sleep(0.05)  # the script has refreshed the tables at least once
                    dom = await page.evaluate("document.documentElement.outerHTML")
                    rows = await page.evaluate(
                        "Object.fromEntries([...document.querySelectorAll('#pool tbody tr')]"
                        ".map(tr => [tr.dataset.deployment, [...tr.cells].map(c => c.textContent)]))"
                    )
                    spend_js = (
                        "[...document.querySelectorAll('#spend tbody tr[data-key]')]"
                        ".map(tr => [tr.dataset.key, ...[...tr.cells].map(c => c.textContent)])"
                    )
                    spend = await page.evaluate(spend_js)
                    with trio.fail_after(15):  # the writer may not have flushed at the first poll
                        while not spend:
                            await trio.sleep(0.2)
                            spend = await page.evaluate(spend_js)
                    spend_note = await page.evaluate(
                        "document.getElementById('spend-note').textContent"
                    )
                    live_by_group = await page.evaluate(
                        "[...document.querySelectorAll('#groups tbody tr')].map(tr => tr.textContent)"
                    )
                    script_cookie = await page.evaluate("document.cookie")
                    cookies = (await page.call("Network.getCookies"))["cookies"]
                    await page.screenshot(tmp_path / "status-page.png")

    assert rows["openai-broken"][3] == "ejected" and rows["openai-broken"][8] == "refused"
    assert rows["openai-broken"][6] == "1" and rows["openai-broken"][7].endswith(" s")
    assert rows["openai-healthy"][3] == "closed"
    assert live_by_group == ["gpt-realtime1"]
    [(key, alias, amount, tokens_in, tokens_out, responses)] = spend
    assert (key, alias, responses) == ("team-voice", "team-voice", "1")
    assert amount.startswith("$") and float(amount[1:].replace(",", "")) > 0
    assert int(tokens_in) + int(tokens_out) == usages[0]["total_tokens"]
    assert spend_note.startswith("since 00:00 UTC (")
    assert TEAM_KEY not in dom
    assert 'class="state state-ejected"' in dom
    assert CLIENT_KEY not in dom
    [ui_cookie] = [c for c in cookies if c["name"] == "rtgate_ui"]
    assert ui_cookie["httpOnly"] and "rtgate_ui" not in script_cookie
    assert (tmp_path / "status-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("path", ["/ui", "/ui/data.json"])
async def test_without_a_master_key_the_page_stays_shut(path: str) -> None:
    config = "model_list:\n  - model_name: m\n    litellm_params: {model: mock/x}\n"
    with trio.fail_after(10):
        async with open_gateway(config) as gw:
            status, body = await http_get(gw.port, path)
    assert (status, path) in ((200, "/ui"), (401, "/ui/data.json"))
    if path == "/ui":
        assert b'action="/ui/login"' in body


async def test_spend_today_sums_the_database_and_unwritten_records_since_utc_midnight(
    tmp_path: Path,
) -> None:
    """While the database is away the page shows this process's unwritten records; once it is
    back, the database's sum. A record from before UTC midnight counts in neither."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    text = priced_config("ws://127.0.0.1:9/v1", database=f"sqlite:///{blocker}/x.db")
    config = parse_text(text, path="<t>").config
    governance = Governance(config)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(governance.run)
            account = governance.open_account(
                key_hash="a" * 64, key_alias="team-a", deployment=config.deployments[0],
                model_group="gpt-realtime", session_id="sess_1",
            )  # fmt: skip
            for i in range(3):
                account.on_response(f"resp_{i}", {"input_tokens": 10, "output_tokens": 2})
            yesterday = attrs.evolve(
                price_response(account.who, "old", {"input_tokens": 99}, account.prices, 0.0),
                start_time=utc_midnight(time.time()) - 60,
            )
            governance.record(yesterday)
            away = await governance.spend_today()
            assert not away.from_database
            [row] = away.keys
            assert (row.key_alias, row.responses, row.input_tokens, row.output_tokens) == (
                "team-a", 3, 30, 6,
            )  # fmt: skip
            assert row.spend_usd == account.cost > 0 and yesterday.spend > 0

            governance.db = Database(f"sqlite:///{tmp_path}/back.db")  # the database returns
            while governance.counters.records_written < 4:  # today's three and yesterday's
                await trio.sleep(0.02)
            back = await governance.spend_today()
            assert back.from_database and back.keys == away.keys
            assert back.since == utc_midnight(time.time())
            nursery.cancel_scope.cancel()
    await governance.aclose()
