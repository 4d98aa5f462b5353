"""Read a LiteLLM-style YAML file into a :class:`GatewayConfig`.

Owns: YAML parsing with line numbers, ``os.environ/NAME`` resolution, type
checks with ``file:line: what is wrong`` errors, warnings for unknown keys
(users migrate big LiteLLM files, so unknown keys never stop a load).
"""

from __future__ import annotations

import hashlib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from rtgate.config.checks import ConfigChecks
from rtgate.config.litellm_keys import UnhonouredKey, unhonoured
from rtgate.config.model import (
    Deployment,
    EventLogSettings,
    GatewayConfig,
    GovernanceSettings,
    IceServer,
    Limits,
    RouterSettings,
    Secret,
    ServerSettings,
    TelemetrySettings,
    TlsSettings,
    VirtualKey,
    WarmPoolSettings,
    WebRtcSettings,
)
from rtgate.errors import ConfigError

ENV_PREFIX = "os.environ/"

# litellm_params keys whose values are secrets wherever they appear.
_SECRET_HINTS = ("key", "secret", "token", "credential", "password")

# LiteLLM's routing strategies rtgate does not implement: served as simple-shuffle
# (LiteLLM's default) with a warning, so a migrated file still loads.
_LITELLM_ONLY_STRATEGIES = {
    "usage-based-routing": "picks the deployment with the lowest tpm/rpm use",
    "usage-based-routing-v2": "picks the deployment with the lowest tpm/rpm use (in Redis)",
    "latency-based-routing": "picks the deployment with the lowest recent latency",
    "cost-based-routing": "picks the cheapest deployment",
}


@attrs.define
class LoadResult:
    config: GatewayConfig
    warnings: list[str]
    """Every warning: the ``not_enforced`` ones first, then the rest in file order."""
    plaintext_secrets: list[str]
    """``file:line`` of secrets written literally where ``os.environ/`` would do."""
    not_enforced: list[str] = attrs.field(factory=list)
    """LiteLLM keys that limit access or spending there and are ignored here."""


class _Ctx:
    """Where we are in the file: for messages, and to collect warnings."""

    def __init__(
        self, path: str, env: Mapping[str, str], checks: ConfigChecks | None = None
    ) -> None:
        self.path = path
        self.env = env
        self.checks = checks
        self.warnings: list[str] = []
        self.not_enforced: list[str] = []
        self.plaintext: list[str] = []

    def error(self, line: int | None, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, line=line)

    def warn(self, line: int | None, message: str) -> None:
        self.warnings.append(f"{self._where(line)}: warning: {message}")

    def warn_unhonoured(self, line: int | None, row: UnhonouredKey) -> None:
        """A LiteLLM key rtgate ignores; one that weakens security or spending, loudly."""
        if row.weakens is None:
            self.warn(line, row.warning())
        else:
            self.not_enforced.append(f"{self._where(line)}: WARNING: {row.warning()}")

    def all_warnings(self) -> list[str]:
        return [*self.not_enforced, *self.warnings]

    def _where(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line is not None else self.path


def _line_of(node: object, key: object = None) -> int | None:
    """1-based line of a mapping key (or of the node itself)."""
    try:
        if key is not None and isinstance(node, CommentedMap):
            return int(node.lc.key(key)[0]) + 1
        lc = getattr(node, "lc", None)
        return int(lc.line) + 1 if lc is not None else None
    except (KeyError, AttributeError, TypeError):
        return None


class _Section:
    """A YAML mapping being read: typed getters, and a record of keys used."""

    def __init__(self, ctx: _Ctx, node: object, name: str, line: int | None = None) -> None:
        if node is None:
            node = CommentedMap()
        if not isinstance(node, Mapping):
            raise ctx.error(line or _line_of(node), f"{name} must be a mapping")
        self.ctx = ctx
        self.node = node
        self.name = name
        self.used: set[str] = set()

    def line(self, key: str | None = None) -> int | None:
        return _line_of(self.node, key) if key is not None else _line_of(self.node)

    def has(self, key: str) -> bool:
        return key in self.node and self.node[key] is not None

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.node.get(key)

    def resolve(self, key: str, value: Any) -> Any:
        """Resolve ``os.environ/NAME`` (a missing variable is an error naming it)."""
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            var = value[len(ENV_PREFIX) :]
            if var not in self.ctx.env:
                raise self.ctx.error(
                    self.line(key), f"{self.name}.{key}: environment variable {var} is not set"
                )
            return self.ctx.env[var]
        return value

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if not self.has(key):
            self.used.add(key)
            return default
        value = self.resolve(key, self.raw(key))
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and (int in kinds or float in kinds) and str not in kinds:
            try:
                return float(value) if float in kinds else int(value)
            except ValueError:
                pass
        if bool in kinds and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool) and bool not in kinds:
            raise self._type_error(key, kinds)
        if not isinstance(value, kinds):
            raise self._type_error(key, kinds)
        return value

    def secret(self, key: str) -> Secret | None:
        if not self.has(key):
            self.used.add(key)
            return None
        raw = self.raw(key)
        if isinstance(raw, str) and not raw.startswith(ENV_PREFIX):
            self.ctx.plaintext.append(f"{self.ctx.path}:{self.line(key)}: {self.name}.{key}")
        value = self.resolve(key, raw)
        if not isinstance(value, str | int):
            raise self._type_error(key, (str,))
        return Secret(str(value))

    def positive(
        self, key: str, kind: type, default: Any = None, *, allow_zero: bool = False
    ) -> Any:
        value = self.get(key, kind, default)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            bound = ">= 0" if allow_zero else "> 0"
            raise self.ctx.error(self.line(key), f"{self.name}.{key} must be {bound}, got {value}")
        return value

    def section(self, key: str) -> _Section:
        self.used.add(key)
        return _Section(self.ctx, self.node.get(key), f"{self.name}.{key}", self.line(key))

    def warn_unknown(self, litellm_section: str | None = None) -> None:
        """Warn about every key not read; ``litellm_section`` names its rows in the table."""
        for key in self.node:
            if key in self.used:
                continue
            row = unhonoured(litellm_section, str(key)) if litellm_section is not None else None
            if row is not None:
                self.ctx.warn_unhonoured(self.line(key), row)
            else:
                self.ctx.warn(self.line(key), f"unknown key {self.name}.{key} (ignored)")

    def warn_unhonoured(self, litellm_section: str) -> None:
        """Warn about every key not read of a LiteLLM section (rows say what LiteLLM does)."""
        for key in self.node:
            if key in self.used:
                continue
            self.used.add(key)
            row = unhonoured(litellm_section, str(key))
            if row is not None:
                self.ctx.warn_unhonoured(self.line(key), row)
            else:
                self.ctx.warn(
                    self.line(key), f"{litellm_section}.{key} is not honoured by rtgate (ignored)"
                )

    def _type_error(self, key: str, kinds: tuple[type, ...]) -> ConfigError:
        names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        return self.ctx.error(self.line(key), f"{self.name}.{key} must be {names}")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}  # fmt: skip


def _fill_attrs(section: _Section, cls: type, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Read every key of ``section`` that names a field of attrs class ``cls``."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.name in skip or not section.has(field.name):
            continue
        values[field.name] = _typed_value(section, field.name, hints[field.name])
    return values


def _typed_value(section: _Section, key: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _typed_value(section, key, args[0])
    if hint is Secret:
        return section.secret(key)
    if hint is bool:
        return section.get(key, bool)
    if hint is int:
        return section.positive(key, int, allow_zero=True)
    if hint is float:
        return section.positive(key, float, allow_zero=True)
    if hint is str:
        return str(section.get(key, (str, int, float)))
    if origin in (frozenset, tuple) and args and args[0] is str:
        value = section.get(key, (list, str))
        items = [value] if isinstance(value, str) else [str(v) for v in value]
        return frozenset(items) if origin is frozenset else tuple(items)
    if origin is tuple:
        value = section.get(key, list)
        return tuple(dict(v) if isinstance(v, Mapping) else v for v in value)
    if origin is Mapping or origin is dict:
        value = section.get(key, dict)
        return {str(k): (float(v) if isinstance(v, int | float) else v) for k, v in value.items()}
    raise section.ctx.error(section.line(key), f"{section.name}.{key}: unsupported value")


def _event_types(value: object, ctx: _Ctx, line: int | None) -> frozenset[str] | None:
    if value == "*" or (isinstance(value, list) and "*" in value):
        return None
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise ctx.error(line, 'logged_real_time_event_types must be "*" or a list of event types')


def _deployment(ctx: _Ctx, entry: _Section, index: int) -> Deployment:
    name = entry.get("model_name", (str, int, float))
    if name is None:
        raise ctx.error(entry.line(), f"model_list[{index}] has no model_name")
    params = entry.section("litellm_params")
    model = params.get("model", str)
    if not model:
        raise ctx.error(
            params.line() or entry.line(), f"model_list[{index}].litellm_params.model is required"
        )
    provider, sep, provider_model = model.partition("/")
    known = ctx.checks.provider_names() if ctx.checks is not None else None
    if not sep or not provider or (known is not None and provider not in known):
        raise ctx.error(
            params.line("model"),
            f"model {model!r}: expected '<provider>/<model>'"
            + (f" with provider one of {', '.join(known)}" if known is not None else ""),
        )
    info = entry.section("model_info")
    mode = info.get("mode", str)
    if mode is not None and mode != "realtime":
        ctx.warn(
            info.line("mode"),
            f"model_list[{index}] has mode {mode!r}; rtgate serves it as realtime",
        )
    for key in info.node:
        row = unhonoured("model_info", str(key))
        if row is not None:
            ctx.warn_unhonoured(info.line(key), row)
        info.used.add(key)  # the rest is metadata LiteLLM shows on /model/info
    model_info = _model_info(ctx, info, index)
    read = {"model", "api_key", "api_base", "api_version", "weight", "max_parallel_requests",
             "rpm", "ssl_verify", "ca_bundle", "health_check_interval", "warm_pool"}  # fmt: skip
    extra: dict[str, object] = {}
    for key in params.node:
        if key in read:
            continue
        row = unhonoured("litellm_params", str(key))
        if row is not None:
            ctx.warn_unhonoured(params.line(key), row)
        if any(hint in key.lower() for hint in _SECRET_HINTS) and params.has(key):
            extra[key] = params.secret(key)
        elif params.has(key):
            extra[key] = params.resolve(key, params.raw(key))
        else:
            params.used.add(key)
    api_base = params.get("api_base", str)
    dep_id = info.get("id", (str, int)) or _derived_id(
        str(name), provider, provider_model, api_base.rstrip("/") if api_base else None
    )
    deployment = Deployment(
        model_name=str(name),
        provider=provider,
        model=provider_model,
        id=str(dep_id),
        api_key=params.secret("api_key"),
        api_base=api_base.rstrip("/") if api_base else None,
        api_version=params.get("api_version", (str, int, float)),
        weight=params.positive("weight", float, 1.0, allow_zero=True),
        max_parallel_requests=params.positive("max_parallel_requests", int),
        rpm=params.positive("rpm", int),
        tls=TlsSettings(
            verify=params.get("ssl_verify", bool, True), ca_bundle=params.get("ca_bundle", str)
        ),
        params=extra,
        health_check_interval=params.positive("health_check_interval", float),
        warm_pool=_warm_pool(ctx, params, index),
        model_info=model_info,
    )
    entry.warn_unknown()
    params.warn_unknown()
    return deployment


def _model_info(ctx: _Ctx, info: _Section, index: int) -> dict[str, object]:
    """``model_info`` as written; its price fields (``*cost*``) must be numbers >= 0."""
    values: dict[str, object] = {}
    for key in info.node:
        value = info.resolve(key, info.node[key])
        if "cost" in str(key) and value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ctx.error(
                    info.line(key), f"model_list[{index}].model_info.{key} must be a number >= 0"
                )
            value = float(value)
        values[str(key)] = value
    return values


def _database_url(ctx: _Ctx, general: _Section) -> Secret | None:
    """``general_settings.database_url``, else ``$DATABASE_URL`` (LiteLLM reads both)."""
    url = general.secret("database_url")
    if url is None and ctx.env.get("DATABASE_URL"):
        url = Secret(ctx.env["DATABASE_URL"])
    if url is not None and not url.value.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ctx.error(
            general.line("database_url"),
            "general_settings.database_url must start with postgresql://, postgres:// or "
            "sqlite:///",
        )
    return url


def _warm_pool(ctx: _Ctx, params: _Section, index: int) -> WarmPoolSettings | None:
    """``litellm_params.warm_pool``: a mapping, or an integer meaning its ``size``."""
    if not params.has("warm_pool"):
        params.used.add("warm_pool")
        return None
    raw = params.raw("warm_pool")
    where = f"model_list[{index}].litellm_params.warm_pool"
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"size": raw}
    if not isinstance(raw, Mapping):
        raise ctx.error(params.line("warm_pool"), f"{where} must be a mapping or an integer size")
    sec = _Section(ctx, raw, where, params.line("warm_pool"))
    size = sec.get("size", int)
    if size is None or size < 1:
        raise ctx.error(
            sec.line("size") or params.line("warm_pool"), f"{where}.size must be an integer >= 1"
        )
    values: dict[str, Any] = {"size": size}
    for field in attrs.fields(WarmPoolSettings):
        if field.name != "size" and sec.has(field.name):
            allow_zero = field.name == "ping_interval_seconds"
            values[field.name] = sec.positive(field.name, float, allow_zero=allow_zero)
    sec.warn_unknown()
    return WarmPoolSettings(**values)


_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def _webrtc(ctx: _Ctx, section: _Section) -> WebRtcSettings:
    """``rtgate.webrtc``: the numbers, and each ICE server's urls checked by scheme."""
    values = _fill_attrs(section, WebRtcSettings, skip=frozenset({"ice_servers", "udp_ports"}))
    if section.has("udp_ports"):
        values["udp_ports"] = _port_range(ctx, section)
    servers: list[IceServer] = []
    node = section.raw("ice_servers")
    if node is not None and not isinstance(node, list):
        raise ctx.error(section.line("ice_servers"), "rtgate.webrtc.ice_servers must be a list")
    for i, raw in enumerate(node or ()):
        sec = _Section(ctx, raw, f"rtgate.webrtc.ice_servers[{i}]", section.line("ice_servers"))
        urls = sec.get("urls", (list, str))
        if urls is None:
            raise ctx.error(sec.line(), f"rtgate.webrtc.ice_servers[{i}] needs urls")
        names = (urls,) if isinstance(urls, str) else tuple(str(u) for u in urls)
        for url in names:
            if not url.startswith(_ICE_SCHEMES):
                raise ctx.error(
                    sec.line("urls"),
                    f"rtgate.webrtc.ice_servers[{i}].urls: {url!r} is not a stun:, stuns:,"
                    " turn: or turns: URL",
                )
        username = sec.get("username", str)
        credential = sec.secret("credential")
        if any(u.startswith(("turn:", "turns:")) for u in names) and (
            username is None or credential is None
        ):
            raise ctx.error(
                sec.line(),
                f"rtgate.webrtc.ice_servers[{i}]: a TURN server needs username and credential",
            )
        servers.append(IceServer(urls=names, username=username, credential=credential))
        sec.warn_unknown()
    section.warn_unknown()
    settings = WebRtcSettings(**values, ice_servers=tuple(servers))
    for key in ("idle_timeout", "answer_timeout", "output_buffer_seconds"):
        if getattr(settings, key) <= 0:
            raise ctx.error(section.line(key), f"rtgate.webrtc.{key} must be > 0")
    return settings


def _port_range(ctx: _Ctx, section: _Section) -> tuple[int, int]:
    """``udp_ports: 40000-40999`` (or ``[40000, 40999]``): two ports, the first not above
    the last, both 1024-65535."""
    raw = section.get("udp_ports", (str, list))
    parts = raw.split("-") if isinstance(raw, str) else raw
    try:
        first, last = (int(str(p).strip()) for p in parts)
    except ValueError:
        first = last = -1
    if not 1024 <= first <= last <= 65535:
        raise ctx.error(
            section.line("udp_ports"),
            f"rtgate.webrtc.udp_ports must be FIRST-LAST within 1024-65535, got {raw!r}",
        )
    return first, last


def _keys(ctx: _Ctx, node: object, line: int | None) -> tuple[VirtualKey, ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        raise ctx.error(line, "rtgate.keys must be a list")
    out: list[VirtualKey] = []
    for i, raw in enumerate(node):
        sec = _Section(ctx, raw, f"rtgate.keys[{i}]", line)
        alias = sec.get("alias", str) or f"key-{i}"
        secret = sec.secret("key")
        digest = sec.get("key_sha256", str)
        if secret is None and digest is None:
            raise ctx.error(sec.line(), f"rtgate.keys[{i}] needs key or key_sha256")
        if digest is not None and len(digest) != 64:
            raise ctx.error(
                sec.line("key_sha256"), f"rtgate.keys[{i}].key_sha256 must be 64 hex digits"
            )
        models = sec.get("models", list)
        out.append(
            VirtualKey(
                alias=alias,
                sha256=digest.lower() if digest else VirtualKey.digest(secret.value),  # type: ignore[union-attr]
                models=frozenset(str(m) for m in models) if models is not None else None,
                max_sessions=sec.positive("max_sessions", int),
                rpm_limit=sec.positive("rpm_limit", int),
            )
        )
        sec.warn_unknown("rtgate.keys")
    return tuple(out)


def _fallbacks(ctx: _Ctx, node: object, line: int | None) -> dict[str, tuple[str, ...]]:
    """LiteLLM's ``[{model_a: [model_b, ...]}, ...]`` (a plain mapping is accepted too)."""
    items = node if isinstance(node, list) else [node]
    out: dict[str, tuple[str, ...]] = {}
    for item in items:
        if not isinstance(item, Mapping):
            raise ctx.error(
                line, "router_settings.fallbacks must be a list of {model: [fallbacks]}"
            )
        for key, value in item.items():
            targets = [value] if isinstance(value, str) else value
            if not isinstance(targets, list):
                raise ctx.error(line, f"router_settings.fallbacks.{key} must be a list")
            out[str(key)] = tuple(str(t) for t in targets)
    return out


def parse_config(
    data: object,
    *,
    path: str = "<config>",
    env: Mapping[str, str] | None = None,
    checks: ConfigChecks | None = None,
) -> LoadResult:
    """Build a config from already-parsed YAML (round-trip nodes keep line numbers).

    Without ``checks`` only what this package knows is checked: any
    ``<provider>/<model>`` is accepted and sinks are not built. The process edge
    loads with every check (:mod:`rtgate.edge.configfile`).
    """
    ctx = _Ctx(path, os.environ if env is None else env, checks)
    top = _Section(ctx, data, "config")
    model_list = top.raw("model_list")
    if not isinstance(model_list, list) or not model_list:
        raise ctx.error(top.line("model_list") if "model_list" in top.node else 1,
                        "model_list must be a non-empty list of deployments")  # fmt: skip
    deployments = tuple(
        _deployment(ctx, _Section(ctx, e, f"model_list[{i}]", _line_of(model_list)), i)
        for i, e in enumerate(model_list)
    )
    seen: dict[str, int] = {}
    for i, dep in enumerate(deployments):
        if dep.id in seen:
            raise ctx.error(_line_of(model_list[i]), f"duplicate deployment id {dep.id!r}")
        seen[dep.id] = i
    _validate_providers(ctx, deployments, model_list)

    general = top.section("general_settings")
    master_key = general.secret("master_key")
    database_url = _database_url(ctx, general)
    allow_db_down = bool(general.get("allow_requests_on_db_unavailable", bool, False))
    general.warn_unhonoured("general_settings")

    litellm = top.section("litellm_settings")
    event_types = EventLogSettings().event_types
    if litellm.has("logged_real_time_event_types"):
        event_types = _event_types(
            litellm.raw("logged_real_time_event_types"), ctx,
            litellm.line("logged_real_time_event_types"),
        )  # fmt: skip
    trace_callbacks = _trace_callbacks(ctx, litellm)
    litellm.warn_unhonoured("litellm_settings")

    router = top.section("router_settings")
    router_values = _fill_attrs(router, RouterSettings, skip=frozenset({"fallbacks"}))
    if router.has("fallbacks"):
        router_values["fallbacks"] = _fallbacks(
            ctx, router.raw("fallbacks"), router.line("fallbacks")
        )
    strategy = router_values.get("routing_strategy")
    if strategy in _LITELLM_ONLY_STRATEGIES:
        ctx.warn(router.line("routing_strategy"),
                 f"router_settings.routing_strategy {strategy} is not implemented by rtgate: "
                 f"served as simple-shuffle (LiteLLM {_LITELLM_ONLY_STRATEGIES[strategy]})")  # fmt: skip
        router_values["routing_strategy"] = "simple-shuffle"
    router_settings = RouterSettings(**router_values)
    if router_settings.shared_state_outage not in ("local", "closed"):
        raise ctx.error(router.line("shared_state_outage"),
                        "router_settings.shared_state_outage must be local or closed")  # fmt: skip
    if router_settings.redis_configured() is False and router_settings.redis_host is not None:
        ctx.warn(router.line("redis_host"), "router_settings.redis_host without redis_port: "
                 "Redis is not used (LiteLLM needs both, or redis_url)")  # fmt: skip
    if router_settings.routing_strategy not in (
        "weighted-round-robin",
        "least-busy",
        "simple-shuffle",
    ):
        raise ctx.error(router.line("routing_strategy"),
                        "router_settings.routing_strategy must be weighted-round-robin, least-busy "
                        "or simple-shuffle")  # fmt: skip
    router.warn_unhonoured("router_settings")
    groups = {d.model_name for d in deployments}
    for source, targets in router_settings.fallbacks.items():
        for target in (source, *targets):
            if target not in groups:
                raise ctx.error(
                    router.line("fallbacks"), f"fallbacks name unknown model {target!r}"
                )

    own = top.section("rtgate")
    limits_sec = own.section("limits")
    limits = Limits(**_fill_attrs(limits_sec, Limits))
    limits_sec.warn_unknown()
    log_sec = own.section("event_log")
    log_values = _fill_attrs(log_sec, EventLogSettings, skip=frozenset({"event_types"}))
    if log_sec.has("event_types"):
        event_types = _event_types(log_sec.raw("event_types"), ctx, log_sec.line("event_types"))
    log_sec.warn_unknown()
    _validate_sinks(ctx, log_values.get("sinks", ()), log_sec.line("sinks"))
    keys = _keys(ctx, own.raw("keys"), own.line("keys"))
    server_values = _fill_attrs(own, ServerSettings, skip=frozenset({"keys", "limits"}))
    server = ServerSettings(**server_values, keys=keys, limits=limits)
    if (server.tls_cert is None) != (server.tls_key is None):
        raise ctx.error(own.line(), "rtgate.tls_cert and rtgate.tls_key go together")
    try:
        ops = server.ops_address()
    except ValueError as exc:
        raise ctx.error(own.line("ops_listen"), str(exc)) from None
    if ops is not None and ops[1] != 0 and ops == (server.host, server.port):
        raise ctx.error(own.line("ops_listen"), "rtgate.ops_listen must differ from host:port")
    gov_sec = own.section("governance")
    governance = GovernanceSettings(**_fill_attrs(gov_sec, GovernanceSettings))
    gov_sec.warn_unknown()
    telemetry = _telemetry(own.section("telemetry"), trace_callbacks)
    webrtc = _webrtc(ctx, own.section("webrtc"))
    own.used.update({"keys", "limits", "event_log", "webrtc"})
    own.warn_unknown()

    for key in top.node:
        if key in top.used:
            continue
        row = unhonoured("", str(key))
        if row is not None:
            ctx.warn_unhonoured(top.line(key), row)
        else:
            ctx.warn(top.line(key), f"unknown top-level key {key!r} (ignored)")
    config = GatewayConfig(
        deployments=deployments,
        server=server,
        router=router_settings,
        event_log=EventLogSettings(**log_values, event_types=event_types),
        master_key=master_key,
        source=path,
        database_url=database_url,
        allow_requests_on_db_unavailable=allow_db_down,
        governance=governance,
        telemetry=telemetry,
        webrtc=webrtc,
    )
    return LoadResult(config, ctx.all_warnings(), ctx.plaintext, ctx.not_enforced)


_TRACE_CALLBACKS = {"otel": "otel", "langfuse": "langfuse", "langfuse_otel": "langfuse"}
"""LiteLLM callback names rtgate honours, and the exporter each one switches on."""


def _trace_callbacks(ctx: _Ctx, litellm: _Section) -> set[str]:
    """Exporters named by ``litellm_settings.callbacks`` / ``success_callback``; others warned."""
    wanted: set[str] = set()
    for key in ("callbacks", "success_callback"):
        if not litellm.has(key):
            continue
        names = litellm.raw(key)
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ctx.error(litellm.line(key), f"litellm_settings.{key} must be a list of names")
        for name in names:
            if name in _TRACE_CALLBACKS:
                wanted.add(_TRACE_CALLBACKS[name])
            else:
                ctx.warn(
                    litellm.line(key),
                    f"litellm_settings.{key}: {name!r} is not a callback rtgate offers "
                    "(it exports traces for 'otel', 'langfuse' and 'langfuse_otel'); ignored",
                )
    return wanted


def _telemetry(section: _Section, callbacks: set[str]) -> TelemetrySettings:
    values = _fill_attrs(section, TelemetrySettings)
    section.warn_unknown()
    settings = TelemetrySettings(**values)
    if settings.max_queue_size < 1:
        raise section.ctx.error(
            section.line("max_queue_size"), "rtgate.telemetry.max_queue_size must be >= 1"
        )
    return attrs.evolve(
        settings,
        otel=settings.otel or "otel" in callbacks,
        langfuse=settings.langfuse or "langfuse" in callbacks,
    )


def _validate_sinks(ctx: _Ctx, sinks: tuple[Mapping[str, object], ...], line: int | None) -> None:
    """Check each event-log sink so a bad entry fails here, with a line, not at start-up."""
    for index, spec in enumerate(sinks):
        if not isinstance(spec, Mapping):
            raise ctx.error(line, f"rtgate.event_log.sinks[{index}] must be a mapping")
        problem = ctx.checks.sink_problem(spec, index) if ctx.checks is not None else None
        if problem is not None:
            raise ctx.error(line, problem)


def _validate_providers(ctx: _Ctx, deployments: tuple[Deployment, ...], nodes: list[Any]) -> None:
    checks = ctx.checks
    if checks is None:
        return
    for dep, node in zip(deployments, nodes, strict=True):
        problems = checks.deployment_problems(dep)
        if problems:
            raise ctx.error(
                _line_of(node), f"deployment {dep.model_name!r}: " + "; ".join(problems)
            )
        warm_problems = checks.warm_pool_problems(dep)
        if warm_problems:
            params = node.get("litellm_params") if isinstance(node, Mapping) else None
            raise ctx.error(
                _line_of(params, "warm_pool") or _line_of(node),
                f"deployment {dep.model_name!r}: " + "; ".join(warm_problems),
            )


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, checks: ConfigChecks | None = None
) -> LoadResult:
    """Read and validate a config file; :class:`ConfigError` with ``file:line`` on failure."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", path=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the file is not UTF-8 text (byte {exc.start})", path=path) from None
    return parse_text(text, path=path, env=env, checks=checks)


def parse_text(
    text: str,
    *,
    path: str = "<config>",
    env: Mapping[str, str] | None = None,
    checks: ConfigChecks | None = None,
) -> LoadResult:
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", path=path, line=line) from None
    if not isinstance(data, CommentedMap):
        raise ConfigError("the file must be a YAML mapping with a model_list", path=path, line=1)
    return parse_config(data, path=path, env=env, checks=checks)


def world_readable_secrets(path: str, result: LoadResult) -> str | None:
    """Why serving ``path`` would expose secrets (literal keys, readable by others), or None."""
    if not result.plaintext_secrets or result.config.server.allow_world_readable_secrets:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not mode & 0o044:
        return None
    return (
        f"{path}: holds {len(result.plaintext_secrets)} secret(s) in plain text and is readable "
        f"by other users (mode {mode & 0o777:o}): chmod 600 it, move the secrets to "
        "os.environ/NAME, or set rtgate.allow_world_readable_secrets: true"
    )


def _derived_id(group: str, provider: str, model: str, api_base: str | None) -> str:
    """A deployment's id without ``model_info.id``: stable across reloads, and no URL in it.

    The id names the deployment in metric labels, logs and records, where a base URL
    (a private host name, a tenant in the path) has no place: a short digest of it
    tells deployments of one group apart instead.
    """
    base = f"{group}:{provider}:{model}"
    if not api_base:
        return base
    return f"{base}:{hashlib.sha256(api_base.encode()).hexdigest()[:10]}"
