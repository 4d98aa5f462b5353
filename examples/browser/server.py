"""The example's backend: serves the page and mints a client secret for it (stdlib only).

The page never sees the virtual key. It asks this backend for a short-lived ``ek_`` client
secret, which this backend gets from rtgate with the key
(``POST /v1/realtime/client_secrets``, as with OpenAI), then the page calls rtgate itself.

    RTGATE_URL=http://127.0.0.1:4000 RTGATE_KEY=sk-... RTGATE_MODEL=gemini-live \\
        python examples/browser/server.py --port 8080
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript")}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        name, kind = FILES.get(self.path.split("?", 1)[0], (None, None))
        if name is None:
            self._answer(404, b"not found", "text/plain")
            return
        self._answer(200, (HERE / name).read_bytes(), kind or "text/plain")

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        if path != "/session":
            self._answer(404, b"not found", "text/plain")
            return
        rtgate = os.environ.get("RTGATE_URL", "http://127.0.0.1:4000").rstrip("/")
        body = json.dumps(
            {
                "expires_after": {"anchor": "created_at", "seconds": 600},
                "session": {
                    "type": "realtime",
                    # The page may pick a model group; the key's allow-list still applies.
                    "model": dict(urllib.parse.parse_qsl(query)).get("model")
                    or os.environ.get("RTGATE_MODEL", "rt-mock"),
                    "instructions": os.environ.get("RTGATE_INSTRUCTIONS", "Be brief."),
                },
            }
        ).encode()
        request = urllib.request.Request(
            f"{rtgate}/v1/realtime/client_secrets",
            data=body,
            headers={
                "Authorization": f"Bearer {os.environ['RTGATE_KEY']}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                minted = json.load(reply)
        except urllib.error.HTTPError as exc:
            self._answer(exc.code, exc.read(), "application/json")
            return
        # Only what the page needs: the secret, its expiry and where to call.
        page = {"value": minted["value"], "expires_at": minted["expires_at"], "rtgate": rtgate}
        self._answer(200, json.dumps(page).encode(), "application/json")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: stdout carries only the URL line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"http://{args.host}:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
