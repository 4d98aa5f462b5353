"""A realtime session from handshake to record: auth, pool walk, dial, accept, relay.

Dial first, then accept: the upstream is opened (and, for providers that greet
first, its first event read) before the client's upgrade is answered, so a
failing deployment costs the client only handshake time and the pool moves
on to the next one. Only when none can serve does the client get an HTTP
error with a JSON body (503, or 429 with ``Retry-After``).
"""

from __future__ import annotations

import http
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial
from urllib.parse import parse_qsl, urlsplit

import attrs
import orjson
import trio
from websockets.datastructures import Headers
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from rtgate.config.model import Deployment, GatewayConfig
from rtgate.errors import (
    BadRequest,
    BudgetExceeded,
    ClientError,
    Forbidden,
    GatewayShuttingDown,
    NoDeploymentAvailable,
    RtgateError,
    TooManySessions,
    Unauthenticated,
    UpstreamConnectError,
    scrub,
)
from rtgate.governance.service import Governance, SessionAccount
from rtgate.net.budget import BufferBudget
from rtgate.net.client_connection import ClientConnection
from rtgate.net.wsconn import _QUIET, WsConnection
from rtgate.pool.router import Pool, Selection
from rtgate.protocol.beta import BetaBridge
from rtgate.providers import connect_bounded, get_provider
from rtgate.providers.base import SessionContext, UpstreamLink
from rtgate.session.admission import Admission, Ticket
from rtgate.session.auth import Authenticator, Principal, check_one_credential, presented_key
from rtgate.session.calls import CallRegistry
from rtgate.session.client_secrets import ClientSecrets, is_client_secret
from rtgate.session.counters import (
    FIRST_AUDIO_BUCKETS,
    HANDSHAKE_BUCKETS,
    LatencyHistogram,
    RelayCounters,
)
from rtgate.session.relay import Outcome, Relay
from rtgate.session.shared_state import SharedState
from rtgate.session.start import SessionStart
from rtgate.session.warm_pool import WarmPools
from rtgate.shared.store import SharedStore
from rtgate.spend.keys import KeyRecord
from rtgate.telemetry.tap import ServedEventLog, SessionInfo, SessionSummary
from rtgate.telemetry.tracing import SessionTrace, Tracing, scrubbed
from rtgate.telemetry.turns import Turn, TurnWatch
from rtgate.translate.base import new_id
from rtgate.wire import Frame

log = logging.getLogger("rtgate.gateway")
ABANDON_CLOSE_TIMEOUT = 5.0
"""How long closing the upstream of a session that never ran may take."""

REALTIME_PATHS = frozenset({"/v1/realtime", "/realtime", "/openai/v1/realtime", "/openai/realtime"})
# Client headers that may travel upstream (everything else stays here).
FORWARDED_HEADERS = ("openai-safety-identifier",)


@attrs.define
class GatewayCounters:
    """Plain counters the metrics endpoint reads (one process)."""

    sessions_active: int = 0
    handshakes_rejected: dict[int, int] = attrs.field(factory=dict)
    dial_failures: dict[str, int] = attrs.field(factory=dict)
    close_codes: dict[int, int] = attrs.field(factory=dict)
    # Read by rtgate.control.metrics at scrape time (plain numbers: nothing prometheus on the hot path).
    sessions_started: dict[tuple[str, str], int] = attrs.field(factory=dict)
    """Accepted sessions by (model group, deployment id)."""
    sessions_ended: dict[tuple[str, str, str], int] = attrs.field(factory=dict)
    """Ended sessions by (model group, deployment id, closed_by)."""
    handshake_seconds: LatencyHistogram = attrs.field(
        factory=lambda: LatencyHistogram(HANDSHAKE_BUCKETS)
    )
    dial_seconds: LatencyHistogram = attrs.field(
        factory=lambda: LatencyHistogram(HANDSHAKE_BUCKETS)
    )
    relay: RelayCounters = attrs.field(factory=RelayCounters)
    reloads: dict[str, int] = attrs.field(factory=dict)
    first_audio_seconds: dict[str, LatencyHistogram] = attrs.field(factory=dict)
    """Per model group: a response's anchor (end of speech, commit, or created) to its first audio."""
    session_closes: dict[tuple[str, int, str], int] = attrs.field(factory=dict)
    """Ended sessions by (model group, close code sent to the client, side that closed)."""

    def observe_first_audio(self, group: str, seconds: float) -> None:
        hist = self.first_audio_seconds.get(group)
        if hist is None:
            hist = self.first_audio_seconds[group] = LatencyHistogram(FIRST_AUDIO_BUCKETS)
        hist.observe(seconds)


RECENT_CLOSES = 50
"""Ended sessions the status page lists."""


class Gateway:
    """Process-wide state of the data plane: config, pool, keys, event log, counters."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        event_log: ServedEventLog | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.pool = Pool(config)
        self.auth = Authenticator(config)
        self.event_log = event_log
        self.counters = GatewayCounters()
        self.admission = Admission(config, self.counters.relay)
        """Gateway and key slots, taken before each dial (:mod:`rtgate.session.admission`)."""
        self.draining = False
        self.shutdown = trio.Event()
        self.secrets = config.secret_values()
        self.client_secrets = ClientSecrets(config)
        """Mints and opens ``ek_`` client secrets (``POST /v1/realtime/client_secrets``)."""
        self.warm = WarmPools(self)
        """Pre-opened upstream connections (``warm_pool``); the server runs it."""
        self.buffers = BufferBudget(config.server.limits.max_buffered_bytes or None)
        """Bytes held in unfinished and queued messages, across every session."""
        self.governance = Governance(config)
        """Database keys, budgets and spend (``general_settings.database_url``); the server runs it."""
        self.tracing = tracing
        """OpenTelemetry spans per session, dial and turn (None: traces off)."""
        self.recent_closes: deque[dict[str, object]] = deque(maxlen=RECENT_CLOSES)
        """The last ended sessions, newest last (for the status page)."""
        self.calls = CallRegistry()
        """WebRTC calls in progress (``POST /v1/realtime/calls``); the server runs it."""

    def reload(self, config: GatewayConfig) -> None:
        """Apply a new config to new sessions; running sessions keep theirs."""
        self.pool.reconfigure(config, trio.current_time())
        self.config = config
        self.auth = Authenticator(config)
        self.secrets = config.secret_values()
        self.client_secrets = ClientSecrets(config)
        self.warm.reconfigure(config)
        self.buffers.limit = config.server.limits.max_buffered_bytes or None
        self.buffers.enforce()
        self.governance.reconfigure(config)
        self.admission.reconfigure(config)

    def share_state(self, store: SharedStore | None) -> SharedState | None:
        """Decide admission and health with every process sharing ``store`` (None: alone)."""
        if store is None:
            return None
        shared = SharedState(store, self.config, self.pool, self.admission.ledger)
        self.admission.shared = shared
        return shared

    @property
    def sessions_by_key(self) -> dict[str, int]:
        """Sessions (live or dialing) per key alias."""
        return self.admission.sessions_by_key()

    # -- handshake ---------------------------------------------------------------

    async def serve_realtime(self, stream: trio.abc.Stream, head: bytes, client_addr: str) -> None:
        """Run one realtime WebSocket session on an accepted stream whose request head is ``head``."""
        limits = self.config.server.limits
        handshake_started = trio.current_time()
        protocol = ServerProtocol(
            select_subprotocol=_select_subprotocol,
            max_size=limits.max_message_bytes,
            logger=_QUIET,
        )
        protocol.receive_data(head)
        request = next((e for e in protocol.events_received() if isinstance(e, Request)), None)
        if request is None or protocol.handshake_exc is not None:
            # The library refused the head and queued its own answer (or only an EOF):
            # answer once, ourselves, with its status and a JSON body.
            status = _refusal_status(protocol.handshake_exc)
            self._count_reject(status)
            message = _refusal_message(protocol.handshake_exc)
            await _write_and_close(
                stream, _json_response(status, "invalid_request_error", "bad_request", message)
            )
            return
        if protocol.eof_sent:
            # Bytes after the head that are no WebSocket frame: the library failed the
            # connection before any answer (RFC 6455 4.1: a client waits for the answer).
            self._count_reject(400)
            message = "bytes after the request head are not a WebSocket frame"
            await _write_and_close(
                stream, _json_response(400, "invalid_request_error", "bad_request", message)
            )
            return
        try:
            session = await self._open_session(request, client_addr)
        except RtgateError as exc:
            self._count_reject(exc.http_status)
            await _send_response(stream, protocol, _error_response(exc, self.secrets))
            return
        response = protocol.accept(request)
        if response.status_code != 101:
            failed = Outcome(1002, "handshake failed", 1000, "", "client")
            await session.release(self, failed)
            session.finish_trace(self, failed, {})
            await session.link.aclose(1001, "client handshake failed")
            protocol.send_response(response)
            await _flush(stream, protocol)
            await trio.aclose_forcefully(stream)
            return
        protocol.send_response(response)
        self.counters.handshake_seconds.observe(trio.current_time() - handshake_started)
        # This frame lives as long as the session: keep only what the session needs
        # (the parsed request and response are a few KiB per idle session).
        del request, response
        client = WsConnection(
            stream, protocol, write_timeout=limits.ping_timeout, budget=self.buffers
        )
        await session.run(self, client)

    async def _open_session(self, request: Request, client_addr: str) -> _Session:
        """Check a WebSocket upgrade's path, origin and credential, then :meth:`open_session`."""
        config = self.config
        if self.draining:
            raise GatewayShuttingDown("the gateway is restarting; retry shortly")
        url = urlsplit(request.path)
        if url.path.rstrip("/") not in REALTIME_PATHS:
            raise BadRequest(f"no realtime endpoint at {url.path}")
        query = dict(parse_qsl(url.query))
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        origins = config.server.allowed_origins
        if origins is not None and "origin" in headers and headers["origin"] not in origins:
            raise Forbidden("origin not allowed")
        subprotocols = _offered_subprotocols(request.headers)
        check_one_credential(request.headers.raw_items(), subprotocols, parse_qsl(url.query))
        key = presented_key(headers, subprotocols, query)
        beta = headers.get("openai-beta", "").replace(" ", "") == "realtime=v1" or (
            "openai-beta.realtime-v1" in subprotocols
        )
        start = await self.session_start(
            key,
            query.get("model") or query.get("deployment"),
            query.get("intent"),
            headers=headers,
            client_addr=client_addr,
            beta=beta,
        )
        return await self.open_session(start)

    async def session_start(
        self,
        key: str | None,
        group: str | None,
        intent: str | None,
        *,
        headers: Mapping[str, str],
        client_addr: str,
        beta: bool = False,
    ) -> SessionStart:
        """Authenticate a presented key or ``ek_`` client secret and resolve the model group.

        The one place a credential becomes a session's principal, for WebSocket upgrades
        and WebRTC calls alike. Raises an :class:`RtgateError` to refuse.
        """
        if self.draining:
            raise GatewayShuttingDown("the gateway is restarting; retry shortly")
        initial_config: Frame | None = None
        if is_client_secret(key):
            # The secret names the group and the session's first configuration.
            grant = self.client_secrets.open(key, time.time())
            principal = await self._secret_issuer(grant.key_digest)
            if group and group != grant.model_group:
                raise Forbidden(f"this client secret opens model {grant.model_group!r} only")
            group, intent, initial_config = grant.model_group, grant.intent, grant.session_update()
        else:
            principal = await self._authenticate(key)
        if not group and intent == "transcription":
            group = self.config.server.transcription_model
            if not group:
                raise BadRequest(
                    "no rtgate.transcription_model configured for intent=transcription"
                )
        if not group:
            raise BadRequest("missing ?model=NAME")
        principal.check_model(group)
        return SessionStart(
            principal=principal,
            group=group,
            intent=intent,
            headers=headers,
            client_addr=client_addr,
            beta=beta,
            initial_config=initial_config,
        )

    async def open_session(self, start: SessionStart) -> _Session:
        """Admit, walk the pool and dial; the session is then ready to :meth:`_Session.run`.

        ``start.call_offer`` set: a WebRTC call the provider terminates (OpenAI, Azure);
        the provider's ``connect`` posts the offer and opens the call's sideband socket.
        """
        config = self.config
        if self.draining:
            raise GatewayShuttingDown("the gateway is restarting; retry shortly")
        principal, group, headers = start.principal, start.group, start.headers
        self.governance.admit(principal.key_hash)  # budget, tpm: refused before any dial
        session_id = new_id("sess")
        ctx = SessionContext(
            session_id=session_id,
            model_group=group,
            intent=start.intent,
            forwarded_headers={k: v for k, v in headers.items() if k in FORWARDED_HEADERS},
            connect_timeout=config.server.limits.connect_timeout,
            max_message_bytes=config.server.limits.max_message_bytes,
            call_offer=start.call_offer,
        )
        trace = self._start_trace(headers, ctx, principal, start.client_addr)
        try:
            ticket = await self.admission.admit(principal, session_id)
        except BaseException as exc:
            if trace is not None:
                _trace_refused(trace, exc, self.secrets)
            raise
        try:
            deployment, link = await self._dial(group, ctx, ticket, trace)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await ticket.release()
            if trace is not None:
                _trace_refused(trace, exc, self.secrets)
            raise
        ticket.start()
        self.counters.sessions_active += 1
        started_key = (group, deployment.id)
        started = self.counters.sessions_started
        started[started_key] = started.get(started_key, 0) + 1
        return _Session(
            ctx,
            principal,
            deployment,
            link,
            start.beta,
            start.client_addr,
            trio.current_time(),
            ticket,
            trace,
            start.initial_config,
        )

    def _start_trace(
        self,
        headers: Mapping[str, str],
        ctx: SessionContext,
        principal: Principal,
        client_addr: str,
    ) -> SessionTrace | None:
        """The session span, from an authenticated handshake on (refused keys make no spans)."""
        if self.tracing is None:
            return None
        attributes: dict[str, str] = {
            "rtgate.session_id": ctx.session_id,
            "rtgate.model_group": ctx.model_group,
            "gen_ai.operation.name": "realtime",
            "client.address": client_addr,
        }
        if principal.alias is not None:
            attributes["rtgate.key_alias"] = principal.alias
            attributes["user.id"] = principal.alias
        if ctx.intent:
            attributes["rtgate.intent"] = ctx.intent
        return self.tracing.session(headers, attributes)

    async def authenticate_key(self, key: str | None) -> Principal:
        """The principal of a presented key (config, master or database key); raises to refuse."""
        return await self._authenticate(key)

    async def _authenticate(self, key: str | None) -> Principal:
        """A config key or the master key, else a database key (from memory, or looked up)."""
        try:
            return self.auth.authenticate(key)
        except Unauthenticated:
            if not key:
                raise
            record = await self.governance.find_key(key)
            if record is None:
                raise
        return self._database_principal(record)

    async def _secret_issuer(self, digest: bytes) -> Principal:
        """The key that minted a client secret, as it stands now: gone or blocked revokes it."""
        try:
            return self.auth.by_digest(digest)
        except Unauthenticated:
            record = await self.governance.find_token(digest.hex())
            if record is None:
                raise Unauthenticated(
                    "client secret revoked: the key that issued it is no longer valid"
                )
        return self._database_principal(record)

    def _database_principal(self, record: KeyRecord) -> Principal:
        self.governance.check_usable(record)
        return Principal(
            alias=record.label,
            models=frozenset(record.models) or None,
            max_sessions=record.max_parallel_requests,
            key_hash=record.token,
            rpm_limit=record.rpm_limit,
        )

    async def _dial(
        self, group: str, ctx: SessionContext, ticket: Ticket, trace: SessionTrace | None = None
    ) -> tuple[Deployment, UpstreamLink]:
        """Walk the pool until a deployment connects; raise when none can."""
        selection = self.pool.select(group, trio.current_time())
        while (deployment := selection.next(reserved_at := trio.current_time())) is not None:
            try:
                grant = await ticket.claim_deployment(deployment)
            except BaseException:
                selection.release(deployment, trio.current_time())
                raise
            if grant.refusal is not None:  # shared state: busy or cooling on another process
                refusal, now = grant.refusal, trio.current_time()
                cooling = refusal.cap == "cooling"
                if cooling:
                    self.pool.adopt_refusal(deployment, now, refusal.retry_after)
                selection.refused(deployment, now, refusal.retry_after, cooling=cooling)
                continue
            if grant.trial:
                selection.begin_trial(deployment, trio.current_time())
            if deployment.warm_pool is not None and ctx.call_offer is None:
                # A warm connection is a model session; a provider's call needs its offer.
                warm = await self._warm_link(selection, deployment, ctx, reserved_at)
                if warm is not None:
                    if trace is not None:
                        trace.dial_succeeded(deployment.id, deployment.provider, warm=True)
                    return deployment, warm
                if not self.pool.fresh_dial_allowed(deployment, trio.current_time()):
                    selection.release(deployment, trio.current_time())
                    await ticket.drop_deployment(deployment)
                    continue
            provider = get_provider(deployment.provider)
            if trace is not None:
                trace.dial_attempt(deployment.id, deployment.provider)
            started = trio.current_time()
            try:
                link = await connect_bounded(provider.connect, deployment, ctx)
            except BaseException as exc:
                if not isinstance(exc, UpstreamConnectError):
                    # Cancelled (client left, shutdown) or a bug: free the slot, then propagate.
                    selection.release(deployment, trio.current_time())
                    await ticket.drop_deployment(deployment)
                    raise
                kind = exc.kind
                selection.failed(deployment, trio.current_time(), kind, exc.retry_after)
                await ticket.drop_deployment(deployment)
                await self.publish_health()
                self.counters.dial_failures[kind] = self.counters.dial_failures.get(kind, 0) + 1
                log.warning(
                    "dial failed: deployment=%s kind=%s error=%s",
                    deployment.id, kind, scrub(str(exc), self.secrets),
                )  # fmt: skip
                if trace is not None:
                    trace.dial_failed(deployment.id, kind, scrubbed(str(exc), self.secrets))
                continue
            now = trio.current_time()
            self.counters.dial_seconds.observe(now - started)
            selection.succeeded(deployment, now, now - started)
            if trace is not None:
                trace.dial_succeeded(deployment.id, deployment.provider, warm=False)
            await self.publish_health()
            return deployment, link
        raise selection.exhausted()

    async def publish_health(self) -> None:
        """Shared state: tell every process the ejections and restorations decided here."""
        if self.admission.shared is not None:
            await self.admission.shared.publish()

    async def _warm_link(
        self, selection: Selection, deployment: Deployment, ctx: SessionContext, reserved_at: float
    ) -> UpstreamLink | None:
        """A warm connection for this session, or None after making room for a fresh dial.

        A half-open trial always dials (its verdict must come from a real dial). A
        session that dials fresh first closes warm connections above the cap.
        """
        link = None
        try:
            if not selection.is_trial(deployment):
                link = await self.warm.take(deployment, ctx, reserved_at)
            if link is None:
                excess = self.pool.warm_excess(deployment)
                if excess:
                    await self.warm.shed(deployment, excess)
        except BaseException:
            selection.release(deployment, trio.current_time())
            raise
        if link is not None:
            selection.adopted(deployment)
        return link

    def _count_reject(self, status: int) -> None:
        rejected = self.counters.handshakes_rejected
        rejected[status] = rejected.get(status, 0) + 1


@attrs.define
class _Session:
    ctx: SessionContext
    principal: Principal
    deployment: Deployment
    link: UpstreamLink
    beta: bool
    client_addr: str
    started: float
    ticket: Ticket
    trace: SessionTrace | None = None
    initial_config: Frame | None = None
    """A client secret's bound configuration, fed to the translator as the first ``session.update``."""
    released: bool = False

    async def run(self, gateway: Gateway, client: ClientConnection) -> None:
        provider = get_provider(self.deployment.provider)
        info = SessionInfo(
            session_id=self.ctx.session_id,
            key_alias=self.principal.alias,
            client_addr=self.client_addr,
            model_group=self.ctx.model_group,
            deployment_id=self.deployment.id,
            provider=self.deployment.provider,
            started_at=time.time(),
        )
        tap = gateway.event_log.open_session(info) if gateway.event_log is not None else None
        account = gateway.governance.open_account(
            key_hash=self.principal.key_hash, key_alias=self.principal.alias,
            deployment=self.deployment, model_group=self.ctx.model_group,
            session_id=self.ctx.session_id, transcription=self.ctx.intent == "transcription",
        )  # fmt: skip
        relay = Relay(
            client,
            self.link,
            provider.translator(self.deployment, self.ctx),
            limits=gateway.config.server.limits,
            bridge=BetaBridge() if self.beta else None,
            tap=tap,
            reconnect=partial(_redial, self.deployment, self.ctx),
            secrets=gateway.secrets + self.deployment.secret_values(),
            shutdown=gateway.shutdown,
            counters=gateway.counters.relay,
            budget=gateway.buffers,
            accounting=account,
            turns=TurnWatch(partial(self._turn_ended, gateway, account)),
            initial_config=self.initial_config,
        )
        if self.trace is not None:
            self.trace.admitted(
                {
                    "rtgate.deployment": self.deployment.id,
                    "rtgate.provider": self.deployment.provider,
                    "gen_ai.provider.name": self.deployment.provider,
                    "gen_ai.request.model": self.deployment.model,
                    "rtgate.beta_client": self.beta,
                }
            )
        outcome: Outcome | None = None
        try:
            outcome = await relay.run()
        finally:
            outcome = outcome or relay.outcome or Outcome(1011, "internal error", 1011, "", "error")
            await self.release(gateway, outcome)
            stats = relay.stats
            cost = account.close(time.time() - info.started_at)
            self.finish_trace(
                gateway, outcome, stats.usage, stats.responses, cost if account.priced else None
            )
            if gateway.event_log is not None:
                now = time.time()
                gateway.event_log.close_session(
                    SessionSummary(
                        info=info,
                        ended_at=now,
                        duration=now - info.started_at,
                        close_code=outcome.client_code,
                        close_reason=outcome.client_reason,
                        closed_by=outcome.closed_by,
                        frames_from_client=stats.frames_from_client,
                        frames_to_client=stats.frames_to_client,
                        bytes_from_client=client.bytes_received,
                        bytes_to_client=stats.bytes_to_client,
                        usage=dict(stats.usage),
                        responses=stats.responses,
                        cost_usd=cost,
                    )
                )

    def _turn_ended(self, gateway: Gateway, account: SessionAccount, turn: Turn) -> None:
        """A response finished (once per response, never per frame); the accounting priced it
        earlier in the same batch."""
        ttfa = turn.time_to_first_audio
        if ttfa is not None:
            gateway.counters.observe_first_audio(self.ctx.model_group, ttfa)
        if self.trace is not None:
            cost = account.response_cost(turn.response_id) if turn.response_id else None
            self.trace.turn(turn, trio.current_time(), cost)

    def finish_trace(
        self,
        gateway: Gateway,
        outcome: Outcome,
        usage: Mapping[str, int],
        responses: int = 0,
        cost_usd: float | None = None,
    ) -> None:
        """End the session span (with its cost, when priced) and list the close for the
        status page."""
        reason = scrubbed(outcome.client_reason, gateway.secrets)
        gateway.recent_closes.append(
            {
                "ended_at": time.time(),
                "session_id": self.ctx.session_id,
                "model_group": self.ctx.model_group,
                "deployment": self.deployment.id,
                "key_alias": self.principal.alias,
                "code": outcome.client_code,
                "reason": reason,
                "closed_by": outcome.closed_by,
                "seconds": round(trio.current_time() - self.started, 3),
            }
        )
        if self.trace is None:
            return
        failed = outcome.closed_by != "client" and outcome.client_code not in (1000, 1001)
        self.trace.ended(
            {
                "rtgate.close_code": outcome.client_code,
                "rtgate.close_reason": reason,
                "rtgate.closed_by": outcome.closed_by,
                "rtgate.upstream_close_code": outcome.upstream_code,
                "rtgate.responses": responses,
            },
            usage,
            f"closed {outcome.client_code} by {outcome.closed_by}" if failed else None,
            cost_usd,
        )

    async def abandon(self, gateway: Gateway, code: int, reason: str) -> None:
        """The session opened but never ran (a call whose answer failed): its slots go
        back, its span ends and its upstream is closed, within a bound."""
        outcome = Outcome(code, reason, 1001, reason, "client")
        with trio.CancelScope(shield=True):
            await self.release(gateway, outcome)
            self.finish_trace(gateway, outcome, {})
            with trio.move_on_after(ABANDON_CLOSE_TIMEOUT):
                await self.link.aclose(1001, reason)

    async def release(self, gateway: Gateway, outcome: Outcome) -> None:
        """The session is over: its slots go back and it is counted (once)."""
        if self.released:
            return
        self.released = True
        await self.ticket.release()
        now = trio.current_time()
        counters = gateway.counters
        counters.sessions_active -= 1
        counters.close_codes[outcome.client_code] = (
            counters.close_codes.get(outcome.client_code, 0) + 1
        )
        ended_key = (self.ctx.model_group, self.deployment.id, outcome.closed_by)
        counters.sessions_ended[ended_key] = counters.sessions_ended.get(ended_key, 0) + 1
        close_key = (self.ctx.model_group, outcome.client_code, outcome.closed_by)
        counters.session_closes[close_key] = counters.session_closes.get(close_key, 0) + 1
        gateway.pool.session_ended(
            self.deployment, now, abnormal=outcome.abnormal, duration=now - self.started
        )
        await gateway.publish_health()


def _trace_refused(trace: SessionTrace, exc: BaseException, secrets: tuple[str, ...]) -> None:
    """End the span of a session that never started (no deployment could serve, or cancelled)."""
    if isinstance(exc, RtgateError):
        trace.rejected(exc.http_status, exc.error_code, scrubbed(exc.message, secrets))
    else:
        trace.rejected(499, "cancelled", "the handshake was abandoned")


async def _redial(deployment: Deployment, ctx: SessionContext) -> UpstreamLink:
    """Dial the same deployment again (a translator asked for a fresh upstream)."""
    return await connect_bounded(get_provider(deployment.provider).connect, deployment, ctx)


# -- handshake helpers ---------------------------------------------------------------


def _select_subprotocol(
    protocol: ServerProtocol, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    # Browsers offer ["realtime", "openai-insecure-api-key.KEY", ...]; OpenAI echoes "realtime".
    return Subprotocol("realtime") if "realtime" in subprotocols else None


def _offered_subprotocols(headers: Headers) -> list[str]:
    offered: list[str] = []
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        offered.extend(p.strip() for p in value.split(",") if p.strip())
    return offered


def _json_response(
    status: int,
    error_type: str,
    code: str,
    message: str,
    extra: Mapping[str, str] | None = None,
    *,
    with_param: bool = False,
) -> Response:
    error: dict[str, object] = {"message": message, "type": error_type, "code": code}
    if with_param:  # LiteLLM's ProxyException shape (budget_exceeded)
        error["param"] = None
    body = orjson.dumps({"error": error})
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    for name, value in (extra or {}).items():
        headers[name] = value
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def _error_response(exc: RtgateError, secrets: tuple[str, ...]) -> Response:
    extra: dict[str, str] = {}
    if isinstance(exc, TooManySessions | NoDeploymentAvailable) and exc.retry_after is not None:
        extra["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, ClientError) and exc.http_status == 401:
        extra["WWW-Authenticate"] = "Bearer"
    return _json_response(
        exc.http_status, exc.error_type, exc.error_code, scrub(exc.message, secrets), extra,
        with_param=isinstance(exc, BudgetExceeded),
    )  # fmt: skip


def _refusal_status(exc: Exception | None) -> int:
    """The status websockets gives a head it refused (431 for header limits, 414, else 400)."""
    if isinstance(exc, HeaderLineTooLong | TooManyHeaders):
        return 431
    if isinstance(exc, RequestLineTooLong):
        return 414
    return 400


def _refusal_message(exc: Exception | None) -> str:
    # Never the library's text: it may quote a header (a key, perhaps) back.
    cause = exc.__cause__ if exc is not None else None
    if isinstance(cause, NotImplementedError) or "request body" in str(cause):
        return "a WebSocket upgrade request must not have a body"
    if isinstance(exc, HeaderLineTooLong | TooManyHeaders | RequestLineTooLong):
        return "request head too large"
    return "malformed WebSocket request"


async def _write_and_close(stream: trio.abc.Stream, response: Response) -> None:
    try:
        with trio.move_on_after(5):
            await stream.send_all(response.serialize())
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    await close_after_answer(stream)


# After an error answer, unread request bytes would make the kernel reset the
# connection, and a reset can destroy the answer before the client reads it.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


async def close_after_answer(stream: trio.abc.Stream) -> None:
    """Close a connection whose answer was sent: FIN first, then read (and drop) the rest, bounded.

    The lingering close of RFC 9112 9.6 (nginx's ``lingering_close``): the client
    sees the answer and then EOF, not a reset, however much of its request was unread.
    """
    with trio.move_on_after(LINGER_SECONDS):
        try:
            if isinstance(stream, trio.SocketStream):
                await stream.send_eof()
            drained = 0
            while drained < LINGER_BYTES:
                data = await stream.receive_some(64 * 1024)
                if not data:
                    break
                drained += len(data)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.BusyResourceError,
            OSError,
        ):
            pass
    await trio.aclose_forcefully(stream)


async def _send_response(
    stream: trio.abc.Stream, protocol: ServerProtocol, response: Response
) -> None:
    protocol.send_response(response)
    await _flush(stream, protocol)
    await close_after_answer(stream)


async def _flush(stream: trio.abc.Stream, protocol: ServerProtocol) -> None:
    data = b"".join(protocol.data_to_send())
    if data:
        try:
            with trio.move_on_after(5):
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
