"""The command line: ``rtgate serve``, ``rtgate check``, ``rtgate --version``.

Edge code only: parse flags, load config, hand over to :mod:`rtgate.edge.server`.
A :class:`ConfigError` becomes ``file:line: what is wrong`` and exit status 1.
"""

from __future__ import annotations

import logging
import os
import sys

import click
import trio

from rtgate import __version__
from rtgate.config.load import LoadResult, world_readable_secrets
from rtgate.edge.configfile import load_config
from rtgate.errors import ConfigError

DEFAULT_CONFIG = "etc/config.yaml"


def _load(path: str) -> LoadResult:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def not_enforced_summary(result: LoadResult) -> str:
    """One line under the loud warnings, so a long list does not hide them."""
    count = len(result.not_enforced)
    return (
        f"{count} LiteLLM setting(s) that limit access or spending in LiteLLM are NOT enforced "
        "by rtgate (listed first above; docs/litellm-migration.md)"
    )


def setup_logging(level: str, fmt: str) -> None:
    from rtgate.edge.logs import configure

    configure(level, fmt)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rtgate")
def cli() -> None:
    """rtgate: a gateway for LLM realtime (speech-to-speech) WebSocket APIs."""


@cli.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True,
              help="LiteLLM-style YAML config.")  # fmt: skip
@click.option("--host", default=None, help="Listen address (default: rtgate.host or 0.0.0.0).")
@click.option("--port", type=int, default=None, help="Listen port (default: rtgate.port or 4000).")
@click.option("--workers", default="1", show_default=True,
              help="Worker processes sharing the port: a number, or 'auto' for one per CPU core.")  # fmt: skip
@click.option("--listen-fd", type=int, default=None, hidden=True,
              help="Serve on this inherited listening socket (set by the supervisor).")  # fmt: skip
def serve(
    config_path: str, host: str | None, port: int | None, workers: str, listen_fd: int | None
) -> None:
    """Start the gateway and serve until SIGTERM/SIGINT (SIGHUP reloads the config)."""
    from rtgate.edge.memory import pin_malloc_thresholds
    from rtgate.edge.server import config_summary, run_until_signalled
    from rtgate.edge.supervisor import listener_from_fd, supervise, worker_count

    pin_malloc_thresholds()  # before any large buffer: freed messages go back to the OS
    result = _load(config_path)
    exposed = world_readable_secrets(config_path, result)
    if exposed is not None:
        raise click.ClickException(exposed)
    config = result.config
    setup_logging(config.server.log_level, config.server.log_format)
    log = logging.getLogger("rtgate")
    worker_id = os.environ.get("RTGATE_WORKER_ID")
    if worker_id is None:  # the supervisor already said all this once
        for warning in result.warnings:
            log.warning("%s", warning)
        if result.not_enforced:
            log.warning("%s", not_enforced_summary(result))
        log.info("rtgate %s: %s", __version__, config_summary(config))
    try:
        count = 1 if listen_fd is not None else worker_count(workers)
        if count > 1:
            sys.exit(trio.run(supervise, config_path, config, count, host, port))

        async def run() -> None:
            listeners = [listener_from_fd(listen_fd)] if listen_fd is not None else None
            await run_until_signalled(
                config_path, config, host=host, port=port, listeners=listeners
            )

        trio.run(run)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # the port is taken, the address does not exist...
        raise click.ClickException(f"cannot listen: {exc}") from None


@cli.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
def check(config_path: str) -> None:
    """Validate a config and print what it would serve (secrets masked)."""
    result = _load(config_path)
    config = result.config
    for warning in result.warnings:
        click.echo(warning, err=True)
    if result.not_enforced:
        click.echo(f"warning: {not_enforced_summary(result)}", err=True)
    for location in result.plaintext_secrets:
        click.echo(
            f"{location}: warning: secret written in plain text; use os.environ/NAME", err=True
        )
    exposed = world_readable_secrets(config_path, result)
    if exposed is not None:
        click.echo(f"warning: {exposed}", err=True)
    from rtgate.edge.server import unusable_sinks

    unusable = unusable_sinks(config)
    if unusable:
        for problem in unusable:
            click.echo(f"{config.source}: {problem}", err=True)
        raise SystemExit(1)
    click.echo(f"{config.source}: OK")
    auth = "master key" if config.master_key else "no master key"
    click.echo(
        f"listen {config.server.host}:{config.server.port}, {auth}, {len(config.server.keys)} virtual keys"
    )
    for group, deployments in config.groups().items():
        click.echo(f"model {group}")
        for dep in deployments:
            key = dep.api_key.masked() if dep.api_key else "-"
            base = dep.api_base or "(provider default)"
            click.echo(
                f"  - {dep.provider}/{dep.model} id={dep.id} weight={dep.weight:g} "
                f"base={base} key={key}"
            )


def main() -> None:
    cli(prog_name="rtgate")
