"""The command line: ``rtgate serve``, ``rtgate check``, ``rtgate keys``, ``rtgate db``, ``--version``.

Edge code only: parse flags, load config, hand over to :mod:`rtgate.edge.server`.
A :class:`ConfigError` becomes ``file:line: what is wrong`` and exit status 1.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

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


# -- the database: keys and migrations, for operators without curl --------------------------


def _database(config_path: str) -> Any:
    from rtgate.governance.db import Database

    config = _load(config_path).config
    url = config.database_url.value if config.database_url is not None else None
    database = Database(url)
    try:
        database.upgrade_sync()
    except Exception as exc:
        raise click.ClickException(f"database {database.description}: {exc}") from None
    return database


@cli.group()
def db() -> None:
    """The keys and spend database (general_settings.database_url, else the state directory)."""


@db.command("upgrade")
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
def db_upgrade(config_path: str) -> None:
    """Apply the schema migrations not yet applied (rtgate serve also does it at start)."""
    from rtgate.governance.db import Database

    config = _load(config_path).config
    database = Database(config.database_url.value if config.database_url else None)
    try:
        applied = database.upgrade_sync()
        version = database.version_sync()
    except Exception as exc:
        raise click.ClickException(f"database {database.description}: {exc}") from None
    finally:
        database.close_sync()
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    click.echo(f"{database.description}: schema version {version} ({done})")


@cli.group()
def keys() -> None:
    """Virtual keys in the database (the same keys as POST /key/generate)."""


@keys.command("create")
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option("--alias", default=None, help="key_alias (unique).")
@click.option("--models", default=None, help="Comma-separated model groups (default: all).")
@click.option("--max-budget", type=click.FloatRange(min=0), default=None, help="US dollars.")
@click.option("--budget-duration", default=None, help="Budget period: 30s, 30m, 1h, 30d, 1mo.")
@click.option("--duration", default=None, help="Expire after: 30m, 1h, 30d, ...")
@click.option("--max-parallel", type=click.IntRange(min=0), default=None,
              help="Concurrent sessions (max_parallel_requests).")  # fmt: skip
@click.option("--rpm", type=click.IntRange(min=0), default=None, help="rpm_limit.")
@click.option("--tpm", type=click.IntRange(min=0), default=None, help="tpm_limit.")
@click.option("--team", default=None, help="team_id (spend is reported per team).")
@click.option("--user", default=None, help="user_id.")
def keys_create(
    config_path: str, alias: str | None, models: str | None, max_budget: float | None,
    budget_duration: str | None, duration: str | None, max_parallel: int | None,
    rpm: int | None, tpm: int | None, team: str | None, user: str | None,
) -> None:  # fmt: skip
    """Create a key and print it (only its sha256 is stored: it cannot be shown again)."""
    import hashlib
    import secrets
    import time

    from rtgate.governance import store
    from rtgate.spend.keys import KeyRecord, abbreviate, duration_seconds

    now = time.time()
    try:
        reset_at = now + duration_seconds(budget_duration) if budget_duration else None
        expires = now + duration_seconds(duration) if duration else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    key = "sk-" + secrets.token_urlsafe(16)
    record = KeyRecord(
        token=hashlib.sha256(key.encode()).hexdigest(), key_alias=alias, key_name=abbreviate(key),
        models=tuple(m.strip() for m in models.split(",") if m.strip()) if models else (),
        max_budget=max_budget, budget_duration=budget_duration, budget_reset_at=reset_at,
        expires=expires, max_parallel_requests=max_parallel, rpm_limit=rpm, tpm_limit=tpm,
        team_id=team, user_id=user, created_at=now, updated_at=now,
    )  # fmt: skip
    database = _database(config_path)

    def insert(conn: Any) -> None:
        if alias is not None and store.key_by_alias(conn, alias) is not None:
            raise click.ClickException(f"a key with alias {alias!r} exists")
        store.insert_key(conn, record)

    try:
        database.transaction_sync(insert, write=True)
    finally:
        database.close_sync()
    click.echo(key)


@keys.command("list")
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
def keys_list(config_path: str) -> None:
    """One line per key: alias, name, spend / budget, limits, state (never the key)."""
    from rtgate.governance import store

    database = _database(config_path)
    try:
        records = database.transaction_sync(store.all_keys)
    finally:
        database.close_sync()
    for r in sorted(records, key=lambda r: r.created_at):
        budget = f"{r.spend:.4f}/{r.max_budget:g}" if r.max_budget is not None else f"{r.spend:.4f}"
        state = "blocked" if r.blocked else "active"
        click.echo(
            f"{r.label}\t{r.key_name or '-'}\t${budget}\t{state}\tmodels="
            f"{','.join(r.models) or 'all'}\tsha256={r.token[:12]}..."
        )


@keys.command("revoke")
@click.option("-c", "--config", "config_path", default=DEFAULT_CONFIG, show_default=True)
@click.option(
    "--block", is_flag=True, help="Block instead of delete (undo with POST /key/unblock)."
)
@click.argument("key_or_alias")
def keys_revoke(config_path: str, block: bool, key_or_alias: str) -> None:
    """Delete (or block) a key given as itself, its sha256 hex or its alias; every host
    refuses it within rtgate.governance.key_refresh_seconds."""
    import hashlib
    import re

    import attrs

    from rtgate.governance import store

    database = _database(config_path)

    def revoke(conn: Any) -> str:
        if re.fullmatch(r"[0-9a-f]{64}", key_or_alias):
            record = store.get_key(conn, key_or_alias)
        else:
            record = store.get_key(conn, hashlib.sha256(key_or_alias.encode()).hexdigest())
            record = record or store.key_by_alias(conn, key_or_alias)
        if record is None:
            raise click.ClickException("no such key or alias")
        if block:
            store.replace_key(conn, attrs.evolve(record, blocked=True))
        else:
            store.delete_keys(conn, [record.token])
        return record.label

    try:
        label = database.transaction_sync(revoke, write=True)
    finally:
        database.close_sync()
    click.echo(f"{'blocked' if block else 'deleted'} {label}")
