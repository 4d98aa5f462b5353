"""The configuration model: frozen attrs classes, validated, secrets hidden.

Pure: nothing here reads files or the environment (``config.load`` does). The
field docstrings are the configuration reference the README points to.

The file format is LiteLLM's (``model_list``, ``litellm_params``,
``general_settings``, ``litellm_settings``, ``router_settings``) plus one
section of rtgate's own, ``rtgate:``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs


@attrs.frozen(repr=False)
class Secret:
    """A secret string. Its repr and str never show the value."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def masked(self) -> str:
        """A hint for humans: the first 3 and last 2 characters at most."""
        v = self.value
        if len(v) <= 8:
            return "***"
        return f"{v[:3]}...{v[-2:]}"


@attrs.frozen
class TlsSettings:
    """Upstream TLS options of one deployment."""

    verify: bool = True
    """Verify the provider's certificate (LiteLLM's ``ssl_verify``). On by default."""
    ca_bundle: str | None = None
    """Path of a PEM CA bundle to trust instead of the system store."""


@attrs.frozen
class WarmPoolSettings:
    """``litellm_params.warm_pool``: upstream connections opened before any client asks.

    Opt-in per deployment. rtgate keeps ``size`` connections to the deployment
    open and idle; a client session of the deployment takes one instead of
    dialing, so it gets ``session.created`` without paying the upstream
    handshake (TCP, TLS, upgrade, first event). Gemini and Vertex sockets are
    opened but their ``setup`` waits for the client. Only WebSocket providers
    can be pre-opened (openai, azure, xai, gemini, vertex_ai); bedrock and mock
    are refused at load. LiteLLM ignores the key, so the file still loads there.
    ``warm_pool: 2`` is short for ``warm_pool: {size: 2}``.
    """

    size: int
    """Idle connections kept open (>= 1; at most ``max_parallel_requests`` when that is set).
    Idle warm connections count against ``max_parallel_requests``, but a client session
    always wins: at the cap, an idle warm connection is closed to make room. Each warm
    dial counts as a new session for ``rpm``."""
    max_idle_seconds: float = 120.0
    """Age (from connect) at which an unused connection is closed and replaced. Providers
    cap a session's lifetime from connect (OpenAI 30 min, xAI 1 h, Gemini ~10 min per
    connection: developers.openai.com/api/docs/guides/realtime-websocket,
    docs.x.ai/docs/guides/voice/agent, ai.google.dev/gemini-api/docs/live-session), so a
    client given a connection this old has that much less session time; the default keeps the loss
    small. A replacement is dialed shortly before, so the pool does not empty while
    recycling. Vertex: at most 240 (its access token is used with >= 300 s left)."""
    refill_delay_seconds: float = 1.0
    """Wait before the next warm dial after a failed one (or after the upstream closed a
    young idle connection); doubles with each failure in a row."""
    refill_delay_max_seconds: float = 60.0
    """Upper bound of that growing wait."""
    ping_interval_seconds: float = 20.0
    """Keepalive pings on idle connections (0: none). An idle connection that has received
    nothing, not even a pong, for this plus ``rtgate.limits.ping_timeout`` is replaced."""


@attrs.frozen
class Deployment:
    """One ``model_list`` entry: a provider endpoint that serves a model group."""

    model_name: str
    """The model group clients ask for (``?model=NAME``)."""
    provider: str
    """Provider prefix of ``litellm_params.model``: openai, azure, xai, gemini, vertex_ai, bedrock, mock."""
    model: str
    """The provider's model (or Azure deployment) name, after the prefix."""
    id: str
    """Stable identity across reloads: ``model_info.id`` or derived from group/provider/model/base."""
    api_key: Secret | None = None
    api_base: str | None = None
    """Override of the provider's base URL (``https://``, ``wss://``, or ``http://127.0.0.1:PORT`` in tests)."""
    api_version: str | None = None
    weight: float = 1.0
    """Share of new sessions under weighted round-robin; 0 = standby."""
    max_parallel_requests: int | None = None
    """Concurrent sessions this deployment may hold."""
    rpm: int | None = None
    """New sessions per minute this deployment may take."""
    tls: TlsSettings = attrs.field(factory=TlsSettings)
    params: Mapping[str, object] = attrs.field(factory=dict, repr=False)
    """Every other ``litellm_params`` key (provider-specific: ``vertex_project``, ``aws_region_name``, ...).
    Secret-valued ones are :class:`Secret`."""
    health_check_interval: float | None = None
    """Seconds between active health probes of this deployment (None: global setting)."""
    warm_pool: WarmPoolSettings | None = None
    """Pre-opened upstream connections (None: every session dials); see :class:`WarmPoolSettings`."""
    model_info: Mapping[str, object] = attrs.field(factory=dict, repr=False)
    """The entry's ``model_info`` as written: LiteLLM's price overrides (``input_cost_per_token``,
    ``input_cost_per_audio_token``, ``cache_read_input_token_cost``, ``output_cost_per_token``,
    ``output_cost_per_audio_token``, ``input_cost_per_image``, ``input_cost_per_second``, all
    dollars per token or second) and ``base_model`` (the priced model of an Azure deployment)."""

    def secret_values(self) -> tuple[str, ...]:
        """Every secret this deployment holds, for scrubbing text that leaves the process."""
        found = [self.api_key.value] if self.api_key else []
        found += [v.value for v in self.params.values() if isinstance(v, Secret)]
        return tuple(found)

    def param_str(self, name: str) -> str | None:
        """A provider parameter as plain text (secrets unwrapped), or None."""
        value = self.params.get(name)
        if isinstance(value, Secret):
            return value.value
        return None if value is None else str(value)


@attrs.frozen
class VirtualKey:
    """A client key: its alias, its hash, what it may use."""

    alias: str
    sha256: str = attrs.field(repr=False)
    """Hex sha256 of the key (keys are never kept in clear after load)."""
    models: frozenset[str] | None = None
    """Model groups this key may use; None = all."""
    max_sessions: int | None = None
    """Concurrent sessions this key may hold."""
    rpm_limit: int | None = None
    """New sessions per minute this key may start (LiteLLM's ``rpm_limit`` on a key: one
    realtime session is one request)."""

    @staticmethod
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()


@attrs.frozen
class RouterSettings:
    """``router_settings``: how sessions are spread and how failures are handled."""

    routing_strategy: str = "weighted-round-robin"
    """``weighted-round-robin`` (default), ``least-busy`` or ``simple-shuffle``."""
    num_retries: int | None = None
    """Extra deployments tried after the first fails; None = every deployment of the group once."""
    allowed_fails: int = 3
    """Consecutive failures that put a deployment in cooldown."""
    cooldown_time: float = 5.0
    """Seconds of the first cooldown; repeated ejections grow it up to ``cooldown_max``."""
    cooldown_max: float = 300.0
    auth_cooldown_time: float = 60.0
    """Cooldown after a 401/403: those do not heal by themselves."""
    max_ejection_percent: float = 50.0
    """Never cool down more than this share of a group at once (panic mode above it)."""
    fallbacks: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    """``[{model_a: [model_b, ...]}]``: groups tried when every deployment of model_a failed."""
    health_check_interval: float | None = None
    """Seconds between active health probes (None: off)."""
    early_failure_seconds: float = 5.0
    """A session that ends abnormally within this many seconds counts as a deployment failure."""
    redis_host: str | None = None
    """Redis or Valkey host for state shared by every rtgate host (LiteLLM's meaning: with
    ``redis_port``, or ``redis_url``, every limit and every deployment's health is shared)."""
    redis_port: int | None = None
    redis_password: Secret | None = None
    redis_url: Secret | None = None
    """``redis://[:PASSWORD@]HOST:PORT[/DB]`` or ``rediss://`` (TLS); wins over host/port/password."""
    shared_state_outage: str = "local"
    """While Redis is unreachable: ``local`` (each rtgate process admits on its share of
    every limit) or ``closed`` (refuse new sessions with 503 until it is back)."""

    def redis_configured(self) -> bool:
        """LiteLLM's rule: Redis is used when ``redis_url``, or host and port, are set."""
        return self.redis_url is not None or (
            self.redis_host is not None and self.redis_port is not None
        )


@attrs.frozen
class EventLogSettings:
    """Event logging: which events, how sampled, where shipped."""

    event_types: frozenset[str] | None = frozenset(
        {"session.created", "response.create", "response.done"}
    )
    """``logged_real_time_event_types``: a set of types, or None for ``"*"`` (all)."""
    session_sample_rate: float = 1.0
    """Share of sessions whose matching events are logged (deterministic per session id)."""
    type_sample_rates: Mapping[str, float] = attrs.field(factory=dict)
    """Per event type sampling, e.g. ``{response.output_audio.delta: 0.01}``."""
    log_audio: bool = False
    """Keep audio payloads in records (default: replaced by their byte length)."""
    redact_paths: tuple[str, ...] = ()
    """Extra JSON paths to redact, e.g. ``session.instructions``."""
    sinks: tuple[Mapping[str, object], ...] = attrs.field(default=(), repr=False)
    """Sink definitions: ``{type: file, path: ...}``, ``{type: stderr}``, ``{type: http, url: ...}``."""
    queue_size: int = 10000
    """Records the relay may hand over before it starts dropping (and counting) them."""
    batch_size: int = 500
    flush_interval: float = 1.0
    session_queue_size: int = 1000
    """Queue slots reserved for end-of-session records, so event floods never crowd them out."""
    queue_max_bytes: int = 64 * 1024 * 1024
    """Encoded event records the queue may hold, in bytes (a second bound besides ``queue_size``)."""
    max_record_bytes: int = 256 * 1024
    """An event record larger than this is logged as its type, id and size only."""
    drain_timeout: float = 5.0
    """Seconds shutdown may spend flushing queued records (what a down sink cannot take is spooled)."""


@attrs.frozen
class Limits:
    """Timeouts and caps; every one ends a session with an ``error`` event and a close code."""

    max_message_bytes: int = 16 * 1024 * 1024
    """Largest WebSocket message accepted from either side (OpenAI takes 15 MiB appends)."""
    connect_timeout: float = 10.0
    """Seconds to dial one upstream deployment (TCP + TLS + upgrade + first event)."""
    handshake_timeout: float = 10.0
    """Seconds a client has to send its complete HTTP request head."""
    max_sessions: int | None = None
    """Concurrent sessions gateway-wide (None: unlimited)."""
    max_session_seconds: float | None = None
    idle_timeout: float | None = None
    """Seconds without a frame either way before a session is closed."""
    max_pending_bytes: int = 4 * 1024 * 1024
    """Bytes rtgate may hold for a peer that does not read before closing it."""
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    drain_seconds: float = 30.0
    """On SIGTERM, how long running sessions may continue before 1001."""
    max_buffered_bytes: int = 256 * 1024 * 1024
    """Bytes the whole gateway (one worker) may hold in unfinished client messages and
    in batches waiting for their write (0: no bound). Over it, the session holding the
    biggest unfinished message is closed with 1013 after an ``error`` event."""
    message_timeout: float = 30.0
    """Seconds a client message may take to complete once its first bytes arrived
    (0: no bound); over it the session is closed with 1008 after an ``error`` event."""


@attrs.frozen
class ServerSettings:
    """The ``rtgate:`` section: listener, client auth, limits, logging of the gateway itself."""

    host: str = "0.0.0.0"
    port: int = 4000
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_unauthenticated: bool = False
    """Allow a key-less config to listen on a non-loopback address."""
    allowed_origins: frozenset[str] | None = None
    """Browser ``Origin`` allow-list (None: any)."""
    keys: tuple[VirtualKey, ...] = ()
    limits: Limits = attrs.field(factory=Limits)
    transcription_model: str | None = None
    """Model group serving ``?intent=transcription`` sessions that name no model."""
    log_level: str = "info"
    log_format: str = "text"
    """``text`` or ``json`` lines on stderr."""
    metrics_auth: bool = False
    """Require the master key for ``/metrics``."""
    allow_world_readable_secrets: bool = False
    """Serve even if the config file holds literal secrets and other users may read it."""
    lease_seconds: float = 15.0
    """Shared state (``--workers``, Redis): a session's slots are a lease of this length that
    its process renews every third of it, so a killed process's slots come back within it."""
    ops_listen: str | None = None
    """``HOST:PORT`` (``[::1]:4001`` for IPv6) of a separate listener for ``/metrics``, ``/admin/*``
    and detailed readiness; the public port then answers only liveness and a short readiness."""

    def ops_address(self) -> tuple[str, int] | None:
        """``ops_listen`` as (host, port); ValueError if it is not ``HOST:PORT``."""
        if self.ops_listen is None:
            return None
        host, sep, port = self.ops_listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"rtgate.ops_listen must be HOST:PORT, not {self.ops_listen!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"rtgate.ops_listen: write an IPv6 host in brackets: [{host}]:{port}")
        return host, int(port)


@attrs.frozen
class GovernanceSettings:
    """``rtgate.governance``: how database keys and spend are kept (the database itself is
    ``general_settings.database_url``)."""

    key_refresh_seconds: float = 2.0
    """Every key is re-read this often, so a key blocked or deleted on another host is
    refused here within this time (a key never seen here is looked up at once)."""
    spend_flush_interval: float = 0.2
    """The spend writer waits this long after a response to batch the ones that follow."""
    spend_buffer_records: int = 100_000
    """Spend records held in memory while the database is away; the oldest half is
    spilled to ``spill_path`` beyond this (written back, once each, when it returns)."""
    spill_path: str | None = None
    """Spill file (default: ``spend-spill.jsonl`` in the state directory)."""


@attrs.frozen
class TelemetrySettings:
    """Traces (OpenTelemetry). Switched on by LiteLLM's ``litellm_settings.callbacks: ["otel"]``
    (or ``["langfuse"]``, ``["langfuse_otel"]``; ``success_callback`` is read the same way) or by
    ``rtgate.telemetry``. The exporter itself is configured by the standard ``OTEL_*``
    environment (endpoint, headers, protocol, sampler, service name); Langfuse by
    ``LANGFUSE_PUBLIC_KEY``, ``LANGFUSE_SECRET_KEY`` and ``LANGFUSE_HOST``."""

    otel: bool = False
    """Export traces over OTLP to ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``."""
    langfuse: bool = False
    """Export traces over OTLP to Langfuse (``LANGFUSE_HOST``/api/public/otel, Basic auth)."""
    max_queue_size: int = 2048
    """Finished spans waiting for the exporter; beyond it new spans are dropped and counted
    (``OTEL_BSP_MAX_QUEUE_SIZE`` in the environment wins over this)."""

    @property
    def enabled(self) -> bool:
        return self.otel or self.langfuse


@attrs.frozen
class IceServer:
    """One STUN or TURN server a terminated WebRTC call offers the peer (and gathers through)."""

    urls: tuple[str, ...]
    """``stun:HOST:PORT``, ``turn:HOST:PORT?transport=udp|tcp`` or ``turns:...``."""
    username: str | None = None
    credential: Secret | None = None
    """A TURN password (never logged; scrubbed like every other secret)."""


@attrs.frozen
class WebRtcSettings:
    """``rtgate.webrtc``: calls rtgate terminates itself (``POST /v1/realtime/calls`` to a
    Gemini, Vertex, Nova Sonic or mock deployment)."""

    ice_servers: tuple[IceServer, ...] = ()
    """STUN/TURN servers used besides rtgate's host candidates."""
    idle_timeout: float = 20.0
    """A call with no audio and no data-channel message from its peer for this long ends
    (a peer that vanished without a DTLS close; a peer whose ICE never connected)."""
    max_calls: int = 200
    """Terminated calls at once in this process (each holds its UDP sockets and codecs);
    beyond it an offer is answered 429. 0: no cap besides the session limits."""
    answer_timeout: float = 5.0
    """Bound on building the SDP answer, ICE candidate gathering included."""
    output_buffer_seconds: float = 60.0
    """Provider audio waiting to be played on the call's track (models answer faster than
    real time); beyond it the relay waits for the track, which backpressures the provider."""
    udp_ports: tuple[int, int] | None = None
    """``(first, last)``: the UDP ports a call's host candidates bind (one per host address
    per call), for a firewall; None: the kernel's ephemeral range. Read at start-up."""


@attrs.frozen
class GatewayConfig:
    """Everything rtgate serves, as loaded from one file."""

    deployments: tuple[Deployment, ...]
    server: ServerSettings = attrs.field(factory=ServerSettings)
    router: RouterSettings = attrs.field(factory=RouterSettings)
    event_log: EventLogSettings = attrs.field(factory=EventLogSettings)
    master_key: Secret | None = None
    source: str = ""
    """Path the config was read from (for messages)."""
    database_url: Secret | None = None
    """``general_settings.database_url`` (or ``$DATABASE_URL``): ``postgresql://...`` or
    ``sqlite:///PATH``; None: ``rtgate.db`` in the state directory."""
    allow_requests_on_db_unavailable: bool = False
    """LiteLLM's switch: admit sessions of budgeted keys while the database is unreachable
    (on the spend this host knows)."""
    governance: GovernanceSettings = attrs.field(factory=GovernanceSettings)
    telemetry: TelemetrySettings = attrs.field(factory=TelemetrySettings)
    webrtc: WebRtcSettings = attrs.field(factory=WebRtcSettings)

    def groups(self) -> dict[str, tuple[Deployment, ...]]:
        """Deployments by model group, in file order."""
        out: dict[str, list[Deployment]] = {}
        for dep in self.deployments:
            out.setdefault(dep.model_name, []).append(dep)
        return {name: tuple(deps) for name, deps in out.items()}

    def has_auth(self) -> bool:
        return self.master_key is not None or bool(self.server.keys)

    def secret_values(self) -> tuple[str, ...]:
        found: list[str] = [self.master_key.value] if self.master_key else []
        found += [s.value for s in (self.router.redis_password, self.router.redis_url) if s]
        if self.router.redis_url is not None:
            password = urlsplit(self.router.redis_url.value).password
            found += [password] if password else []
        if self.database_url is not None:
            found.append(self.database_url.value)
        for dep in self.deployments:
            found.extend(dep.secret_values())
        found += [s.credential.value for s in self.webrtc.ice_servers if s.credential]
        return tuple(found)
