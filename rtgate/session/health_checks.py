"""Active health checks: dial deployments nobody is using and report to the pool.

The pool decides *what* to probe (:meth:`rtgate.pool.router.Pool.claim_health_checks`):
a deployment whose cooldown just ended (the probe is its half-open trial, so
no client pays for it) and a healthy one idle for its
``health_check_interval``. Never one that is still cooling down. This task
only does the I/O: ``connect(dep)`` (supplied by the server) performs the
upgrade and waits for the first server event, then the link is closed at once;
:func:`provider_connect` is the usual one.

Time is read from ``trio.current_time()`` so tests drive this with
``autojump_clock``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from rtgate.config.model import Deployment
from rtgate.errors import UpstreamConnectError
from rtgate.pool.router import Pool
from rtgate.providers import get_provider
from rtgate.providers.base import SessionContext, UpstreamLink

log = logging.getLogger("rtgate.pool")

Connect = Callable[[Deployment], Awaitable[UpstreamLink]]

# The loop re-asks the pool at least this often: ejections and reloads happen
# between wake-ups and the pure pool cannot wake a sleeping task.
POLL_SECONDS = 1.0
# Floor of a sleep, so a deployment due "now" that could not be claimed never spins the loop.
MIN_SLEEP_SECONDS = 0.05


def provider_connect(pool: Pool) -> Connect:
    """The usual ``connect``: dial through the deployment's provider, as a session would."""

    async def connect(dep: Deployment) -> UpstreamLink:
        limits = pool.config.server.limits
        ctx = SessionContext(
            session_id=f"health-check-{dep.id}",
            model_group=dep.model_name,
            connect_timeout=limits.connect_timeout,
            max_message_bytes=limits.max_message_bytes,
        )
        return await get_provider(dep.provider).connect(dep, ctx)

    return connect


async def run_health_checks(
    pool: Pool,
    *,
    connect: Connect,
    timeout: float | None = None,
    poll_seconds: float = POLL_SECONDS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Probe due deployments forever (until cancelled); one probe per deployment at a time.

    ``timeout`` bounds each probe (default: the config's ``connect_timeout``).
    """
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            now = trio.current_time()
            for dep in pool.claim_health_checks(now):
                bound = (
                    timeout if timeout is not None else pool.config.server.limits.connect_timeout
                )
                nursery.start_soon(_probe, pool, dep, connect, bound, name=f"probe {dep.id}")
            due = pool.next_health_check_at(now)
            delay = poll_seconds if due is None else min(due - now, poll_seconds)
            await trio.sleep(max(delay, MIN_SLEEP_SECONDS))


async def _probe(pool: Pool, dep: Deployment, connect: Connect, timeout: float) -> None:
    started = trio.current_time()
    reported = False
    try:
        try:
            with trio.fail_after(timeout):
                link = await connect(dep)
        except trio.TooSlowError:
            pool.report_probe(dep, trio.current_time(), ok=False, kind="timeout")
            reported = True
            return
        except UpstreamConnectError as exc:
            pool.report_probe(
                dep, trio.current_time(), ok=False, kind=exc.kind, retry_after=exc.retry_after
            )
            reported = True
            return
        except Exception:
            # A bug in a provider must not end health checking for every deployment.
            log.exception("health check of deployment %s crashed", dep.id)
            pool.report_probe(dep, trio.current_time(), ok=False, kind="error")
            reported = True
            return
        now = trio.current_time()
        pool.report_probe(dep, now, ok=True, handshake_seconds=now - started)
        reported = True
        with trio.move_on_after(timeout):
            await link.aclose(1000, "health check")
    finally:
        if not reported:
            pool.cancel_probe(dep)  # cancelled (shutdown): judge nothing
