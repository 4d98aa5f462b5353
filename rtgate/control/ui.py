"""The status page at ``/ui``: pool health, live sessions, recent closes, spend per key today.

For the master key only.

Server-rendered HTML (it reads well without JavaScript), refreshed by a small
script that polls ``/ui/data.json``; the script and the stylesheet ship in the
package (``rtgate/control/static``): no CDN, no build step. Routes::

    GET  /ui              the page, or the login form when not signed in
    POST /ui/login        form field ``key``: the master key; sets the session cookie
    POST /ui/logout       clears it
    GET  /ui/data.json    what the page shows, as JSON
    GET  /ui/static/NAME  ui.js, ui.css

Sign-in is the master key, typed into the form (a POST body, never a URL) or
sent as HTTP Basic (any user name) or ``Authorization: Bearer``. The cookie is
``HttpOnly; SameSite=Strict`` and holds no key: an expiry and its HMAC under the
master key, so every worker of ``--workers N`` accepts it and changing the
master key signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs

import attrs
import orjson
import trio

from rtgate import __version__
from rtgate.session.auth import presented_key
from rtgate.session.gateway import Gateway

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

COOKIE: Final = "rtgate_ui"
COOKIE_SECONDS: Final = 12 * 3600
MAX_FORM_BYTES: Final = 4096
STATIC: Final = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}
_SECURITY_HEADERS: Final = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


def _static(name: str) -> bytes:
    return resources.files("rtgate.control").joinpath("static", name).read_bytes()


class StatusPage:
    """The ``/ui`` routes over a :class:`Gateway` (called by the control app)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, path: str, headers: Mapping[str, str]
    ) -> None:
        method = scope["method"]
        if path.startswith("/ui/static/"):
            name = path.removeprefix("/ui/static/")
            if name not in STATIC or method not in ("GET", "HEAD"):
                await _respond(send, 404, b"not found", "text/plain")
                return
            await _respond(send, 200, _static(name), STATIC[name], cache=True)
        elif path == "/ui/login" and method == "POST":
            await self._login(scope, receive, send)
        elif path == "/ui/logout" and method == "POST":
            await _redirect(send, "/ui", _cookie("", 0, _secure(scope)))
        elif path == "/ui" and method in ("GET", "HEAD"):
            if self._signed_in(headers):
                await _respond(send, 200, await self._page(), "text/html; charset=utf-8")
            else:
                await _respond(send, 200, _login_page(""), "text/html; charset=utf-8")
        elif path == "/ui/data.json" and method in ("GET", "HEAD"):
            if not self._signed_in(headers):
                await _respond(send, 401, b'{"error":"sign in at /ui"}', "application/json")
                return
            await _respond(send, 200, orjson.dumps(await self.data()), "application/json")
        else:
            await _respond(send, 404 if method in ("GET", "HEAD") else 405, b"", "text/plain")

    # -- sign-in ---------------------------------------------------------------------

    def _signed_in(self, headers: Mapping[str, str]) -> bool:
        auth = self.gateway.auth
        if auth.is_master(presented_key(headers, (), {})) or auth.is_master(_basic_key(headers)):
            return True
        token = _cookies(headers.get("cookie", "")).get(COOKIE)
        return token is not None and self._token_valid(token)

    def _signing_key(self) -> bytes | None:
        master = self.gateway.config.master_key
        return (
            None
            if master is None
            else hashlib.sha256(b"rtgate-ui\0" + master.value.encode()).digest()
        )

    def _token(self, expires: int) -> str | None:
        key = self._signing_key()
        if key is None:
            return None
        mac = hmac.new(key, str(expires).encode(), hashlib.sha256).hexdigest()
        return f"{expires}.{mac}"

    def _token_valid(self, token: str) -> bool:
        expires, _, _mac = token.partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            return False
        expected = self._token(int(expires))
        return expected is not None and hmac.compare_digest(expected, token)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive, MAX_FORM_BYTES)
        fields = parse_qs(body.decode("utf-8", "replace")) if body is not None else {}
        key = (fields.get("key") or [""])[0]
        if not self.gateway.auth.is_master(key):
            await trio.sleep(0.2)  # a guess costs time
            page = _login_page("That is not the master key.")
            await _respond(send, 401, page, "text/html; charset=utf-8")
            return
        expires = int(time.time()) + COOKIE_SECONDS
        token = self._token(expires)
        assert token is not None  # is_master held, so there is a master key
        await _redirect(send, "/ui", _cookie(token, COOKIE_SECONDS, _secure(scope)))

    # -- what the page shows -------------------------------------------------------

    async def data(self) -> dict[str, Any]:
        gateway = self.gateway
        today = await gateway.governance.spend_today()
        now = trio.current_time()
        pool = [
            {"deployment": dep_id, **stats}
            for dep_id, stats in sorted(
                gateway.pool.statistics(now).items(),
                key=lambda item: (str(item[1].get("model_name")), item[0]),
            )
        ]
        by_group: dict[str, int] = {}
        ended: dict[str, int] = {}
        for (group, _dep, _side), n in gateway.counters.sessions_ended.items():
            ended[group] = ended.get(group, 0) + n
        for (group, _dep), n in gateway.counters.sessions_started.items():
            by_group[group] = by_group.get(group, 0) + n
        live_groups = {g: n - ended.get(g, 0) for g, n in sorted(by_group.items())}
        return {
            "version": __version__,
            "time": time.time(),
            "draining": gateway.draining,
            "sessions_active": gateway.counters.sessions_active,
            "pool": pool,
            "sessions_by_group": {g: n for g, n in live_groups.items() if n > 0},
            "sessions_by_key": {k: n for k, n in sorted(gateway.sessions_by_key.items()) if n > 0},
            "recent_closes": list(reversed(gateway.recent_closes)),
            "spend_today": {
                "since": today.since,
                "from_database": today.from_database,
                "keys": [attrs.asdict(k) for k in today.keys],
            },
            "first_audio": {
                group: {"count": hist.count, "mean_seconds": hist.sum / hist.count}
                for group, hist in sorted(gateway.counters.first_audio_seconds.items())
                if hist.count
            },
        }

    async def _page(self) -> bytes:
        data = await self.data()
        template = _static("ui.html").decode()
        return (
            template.replace("{{version}}", html.escape(__version__))
            .replace("{{pool_rows}}", "".join(_pool_row(d) for d in data["pool"]))
            .replace("{{group_rows}}", _count_rows(data["sessions_by_group"]))
            .replace("{{key_rows}}", _count_rows(data["sessions_by_key"]))
            .replace("{{close_rows}}", "".join(_close_row(c) for c in data["recent_closes"]))
            .replace("{{spend_rows}}", _spend_rows(data["spend_today"]["keys"]))
            .replace("{{spend_note}}", html.escape(_spend_note(data["spend_today"])))
            .replace("{{sessions_active}}", str(data["sessions_active"]))
            .encode()
        )


# -- rendering (every value escaped; ui.js renders the same cells with textContent) --------


def _cell(value: object, cls: str = "") -> str:
    text = "" if value is None else str(value)
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def _seconds(value: object) -> str:
    return "" if not isinstance(value, int | float) else f"{value:.1f} s"


def _millis(value: object) -> str:
    return "" if not isinstance(value, int | float) else f"{value * 1000:.0f} ms"


def _pool_row(d: Mapping[str, Any]) -> str:
    state = str(d.get("state", ""))
    cooldown = d.get("cooldown_remaining") or 0
    return (
        f'<tr data-deployment="{html.escape(str(d["deployment"]))}" data-state="{html.escape(state)}">'
        + _cell(d.get("model_name"))
        + _cell(d["deployment"])
        + _cell(d.get("provider"))
        + _cell(state, f"state state-{state}")
        + _cell(d.get("weight"))
        + _cell(d.get("active_sessions"))
        + _cell(d.get("ejections"))
        + _cell(_seconds(cooldown) if cooldown else "")
        + _cell(d.get("last_error"))
        + _cell(_millis(d.get("handshake_latency_ewma")))
        + "</tr>"
    )


def _count_rows(counts: Mapping[str, int]) -> str:
    if not counts:
        return '<tr class="empty"><td colspan="2">none</td></tr>'
    return "".join(f"<tr>{_cell(name)}{_cell(n)}</tr>" for name, n in counts.items())


def usd(value: float) -> str:
    """Dollars as the page shows them: cents, or six decimals below one cent (a test session
    costs a fraction of a cent and must not read as zero)."""
    if value == 0:
        return "$0.00"
    return f"${value:.6f}" if value < 0.01 else f"${value:,.2f}"


def _spend_rows(keys: list[Mapping[str, Any]]) -> str:
    if not keys:
        return '<tr class="empty"><td colspan="5">no spend today</td></tr>'
    return "".join(
        f'<tr data-key="{html.escape(str(k["key_alias"]))}">'
        + _cell(k["key_alias"] or "(no key)")
        + _cell(usd(float(k["spend_usd"])), "num")
        + _cell(k["input_tokens"], "num")
        + _cell(k["output_tokens"], "num")
        + _cell(k["responses"], "num")
        + "</tr>"
        for k in keys
    )


def _spend_note(today: Mapping[str, Any]) -> str:
    day = time.strftime("%Y-%m-%d", time.gmtime(float(today["since"])))
    note = f"since 00:00 UTC ({day}), all workers and hosts sharing the spend database"
    if not today["from_database"]:
        note += " (database unreachable: its last answer and this process's unwritten records)"
    return note


def _close_row(c: Mapping[str, Any]) -> str:
    ended = time.strftime("%H:%M:%S", time.localtime(float(c["ended_at"])))
    code = c.get("code")
    bad = c.get("closed_by") != "client" and code not in (1000, 1001)
    return (
        "<tr>"
        + _cell(ended)
        + _cell(c.get("model_group"))
        + _cell(c.get("deployment"))
        + _cell(c.get("key_alias"))
        + _cell(code, "code bad" if bad else "code")
        + _cell(c.get("closed_by"))
        + _cell(c.get("reason"))
        + _cell(_seconds(c.get("seconds")))
        + "</tr>"
    )


def _login_page(message: str) -> bytes:
    return (
        _static("login.html")
        .decode()
        .replace("{{message}}", html.escape(message))
        .replace("{{version}}", html.escape(__version__))
        .encode()
    )


# -- HTTP helpers --------------------------------------------------------------------------


def _basic_key(headers: Mapping[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:
        return None
    return decoded.partition(":")[2] or None


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name, value)
    return out


def _secure(scope: Scope) -> bool:
    return scope.get("scheme") == "https"


def _cookie(token: str, max_age: int, secure: bool) -> tuple[bytes, bytes]:
    flags = f"{COOKIE}={token}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return (b"set-cookie", (flags + ("; Secure" if secure else "")).encode())


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit``."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return bytes(body)


async def _redirect(send: Send, location: str, cookie: tuple[bytes, bytes]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode()),
                cookie,
                (b"content-length", b"0"),
                *_SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, *, cache: bool = False
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *_SECURITY_HEADERS,
    ]
    if cache:
        headers[2] = (b"cache-control", b"public, max-age=300")
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
