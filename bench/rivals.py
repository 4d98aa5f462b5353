"""The other proxies rtgate is measured against: nginx and LiteLLM, as pinned child processes.

Owns: finding (or installing, as root, Debian's ``nginx-light``) nginx and
its config as a plain one-worker WebSocket proxy; LiteLLM's proxy from
``/tmp/litellm-venv`` with one worker and its master key. Neither is a
project dependency; :mod:`bench.stage_proxies` skips what is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bench.procs import PROXY_CORE, children, free_port, pin, process, wait_port

LITELLM_VENV = Path("/tmp/litellm-venv")
LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()  # LiteLLM refuses to start without one


def ensure_nginx() -> str | None:
    """nginx's path, installing Debian's package once if possible (bench only)."""
    path = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "nginx-light"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        path = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
    return path


@contextlib.contextmanager
def nginx(
    workdir: Path, upstream_port: int, binary: str, *, tls_upstream: bool = False
) -> Iterator[tuple[int, list[int]]]:
    """(port, [master, worker] pids) of nginx as a plain WebSocket proxy, one worker
    (to a ``wss://`` upstream when ``tls_upstream``, without checking its certificate)."""
    port = free_port()
    scheme = "https" if tls_upstream else "http"
    conf = workdir / "nginx.conf"
    conf.write_text(f"""\
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/nginx-tmp;
  proxy_temp_path {workdir}/nginx-tmp;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass {scheme}://127.0.0.1:{upstream_port};
      proxy_ssl_verify off;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      proxy_buffering off;
      tcp_nodelay on;
    }}
  }}
}}
""")
    (workdir / "nginx-tmp").mkdir(exist_ok=True)
    argv = [*pin(PROXY_CORE), binary, "-c", str(conf), "-p", str(workdir)]
    with process(argv, log=workdir / "nginx.log") as proc:
        wait_port(port, proc=proc)
        yield port, [proc.pid, *children(proc.pid)]


@contextlib.contextmanager
def litellm(workdir: Path, upstream_port: int) -> Iterator[tuple[int, list[int]]]:
    """(port, pids) of a LiteLLM proxy from /tmp/litellm-venv, one worker, pinned."""
    config = workdir / "litellm.yaml"
    config.write_text(f"""\
model_list:
  - model_name: bench-openai
    litellm_params:
      model: openai/gpt-realtime
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-bench-not-a-real-key
""")
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    argv = [
        *pin(PROXY_CORE),
        str(LITELLM_VENV / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    with process(argv, log=workdir / "litellm.log", env=env) as proc:
        wait_port(port, timeout=120, proc=proc)
        yield port, [proc.pid, *children(proc.pid)]
