"""The command line: ``rtgate serve``, ``rtgate check``, ``rtgate --version``.

Edge code only: parse flags, load config, hand over to :mod:`rtgate.server`.
A :class:`ConfigError` becomes ``file:line: what is wrong`` and exit status 1.
"""

from __future__ import annotations

import logging
import signal
import sys

import click
import trio

from rtgate import __version__
from rtgate.config.load import LoadResult, load_config
from rtgate.config.model import GatewayConfig
from rtgate.errors import ConfigError

DEFAULT_CONFIG = "etc/config.yaml"


def _load(path: str) -> LoadResult:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def setup_logging(level: str, fmt: str) -> None:
    from rtgate.logs import configure

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
def serve(config_path: str, host: str | None, port: int | None) -> None:
    """Start the gateway and serve until SIGTERM/SIGINT."""
    result = _load(config_path)
    config = result.config
    setup_logging(config.server.log_level, config.server.log_format)
    log = logging.getLogger("rtgate")
    for warning in result.warnings:
        log.warning("%s", warning)
    try:
        trio.run(_serve_until_signal, config, host, port)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


async def _serve_until_signal(config: GatewayConfig, host: str | None, port: int | None) -> None:
    from rtgate.server import serve as serve_gateway

    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    if stop.is_set():
                        sys.exit(0)  # a second signal: stop now
                    stop.set()

        nursery.start_soon(watch_signals)
        await serve_gateway(config, host=host, port=port, stop=stop)
        nursery.cancel_scope.cancel()


@cli.command()
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
def check(config_path: str) -> None:
    """Validate a config and print what it would serve (secrets masked)."""
    result = _load(config_path)
    config = result.config
    for warning in result.warnings:
        click.echo(warning, err=True)
    for location in result.plaintext_secrets:
        click.echo(
            f"{location}: warning: secret written in plain text; use os.environ/NAME", err=True
        )
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
