"""LiteLLM config keys rtgate does not honour, and what each does in LiteLLM.

Owns the table the loader warns from: a migrated LiteLLM file keeps loading, and
every key in it that rtgate ignores gets a ``file:line`` warning naming what LiteLLM
would have done. Keys whose absence weakens security or spending control are
marked (:class:`Weakens`); the loader lists them first, loudly.

Built from LiteLLM's own config readers: ``ProxyConfig.load_config`` in
``litellm/proxy/proxy_server.py`` (the ``litellm_settings`` loop, the
``general_settings`` reads, the top-level sections), ``ConfigGeneralSettings`` and
``ConfigYAML`` in ``litellm/proxy/_types.py``, the ``Router.__init__`` arguments
that ``router_settings`` feeds, and the key fields of ``/key/generate``.

When rtgate makes a key real, its loader reads the key and its row goes (a test
fails while a read key still has a row). Rows that other work will remove:
``router_settings.redis_*`` (shared state) and the ``rtgate.keys`` budget and limit
fields (config-file keys; database keys have them through the key API). Keys not in
the table that rtgate does not read still warn, with a
generic sentence.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs


class Weakens(enum.Enum):
    """What a LiteLLM key protects that rtgate, ignoring it, does not."""

    SECURITY = "security"
    SPENDING = "spending control"


@attrs.frozen
class UnhonouredKey:
    """One LiteLLM key rtgate reads past."""

    section: str
    """Where the key sits: ``general_settings``, ``litellm_settings``, ``router_settings``,
    ``litellm_params``, ``model_info``, ``rtgate.keys`` (each entry), or ``""`` (top level)."""
    key: str
    litellm: str
    """What LiteLLM does with it (a sentence starting with a verb)."""
    weakens: Weakens | None = None
    instead: str = ""
    """What to use in rtgate instead, if anything."""

    def name(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key

    def warning(self) -> str:
        instead = f"; in rtgate: {self.instead}" if self.instead else ""
        if self.weakens is not None:
            return (
                f"NOT ENFORCED ({self.weakens.value}): {self.name()} is ignored by rtgate. "
                f"LiteLLM {self.litellm}{instead}"
            )
        return f"{self.name()} is not honoured by rtgate (ignored). LiteLLM {self.litellm}{instead}"


_S = Weakens.SECURITY
_M = Weakens.SPENDING

_GS = "general_settings"
_LS = "litellm_settings"
_RS = "router_settings"
_LP = "litellm_params"
_KEYS = "rtgate.keys"

ROWS: tuple[UnhonouredKey, ...] = (
    # --- top level (ConfigYAML and the sections load_config reads) ---
    UnhonouredKey("", "guardrails", "runs these guardrails on realtime transcripts and blocks "
                  "responses that fail them", _S),
    UnhonouredKey("", "policies", "attaches guardrail policies to keys, teams and models", _S),
    UnhonouredKey("", "policy_attachments", "binds the policies to keys, teams and models", _S),
    UnhonouredKey("", "environment_variables", "sets these variables in its environment "
                  "before reading the rest of the file",
                  instead="set them in the service's environment (systemd EnvironmentFile)"),
    UnhonouredKey("", "include", "merges the model_list of the named files into this one",
                  instead="put every deployment in one file"),
    UnhonouredKey("", "callback_settings", "configures its logging callbacks"),
    UnhonouredKey("", "credential_list", "defines named credentials deployments refer to with "
                  "litellm_credential_name", instead="give each deployment its api_key"),
    UnhonouredKey("", "mcp_servers", "registers MCP servers for tool calls"),
    UnhonouredKey("", "mcp_tools", "registers MCP tools"),
    UnhonouredKey("", "agent_list", "registers agents"),
    UnhonouredKey("", "vector_store_registry", "registers vector stores"),
    UnhonouredKey("", "prompts", "registers managed prompts"),
    UnhonouredKey("", "search_tools", "registers search tools"),
    UnhonouredKey("", "assistant_settings", "configures the /assistants endpoints"),
    UnhonouredKey("", "files_settings", "configures the /files endpoints"),
    UnhonouredKey("", "finetune_settings", "configures the /fine_tuning endpoints"),
    UnhonouredKey("", "default_vertex_config", "sets defaults for the Vertex pass-through routes"),
    UnhonouredKey("", "worker_registry", "makes this proxy a control plane for other instances"),
    # --- general_settings (ProxyConfig.load_config, ConfigGeneralSettings) ---
    UnhonouredKey(_GS, "database_type", "keeps keys and spend in DynamoDB instead", _M),
    UnhonouredKey(_GS, "database_connection_pool_limit", "sizes the database pool"),
    UnhonouredKey(_GS, "database_connection_timeout", "bounds database connects"),
    UnhonouredKey(_GS, "store_model_in_db", "loads models and settings from the database"),
    UnhonouredKey(_GS, "disable_spend_logs", "stops writing one spend row per request"),
    UnhonouredKey(_GS, "max_parallel_requests", "caps the concurrent requests of each key", _M,
                  "rtgate.keys[].max_sessions"),
    UnhonouredKey(_GS, "global_max_parallel_requests", "caps concurrent requests for the whole "
                  "proxy instance", _M, "rtgate.limits.max_sessions"),
    UnhonouredKey(_GS, "custom_auth", "authenticates clients with your own function", _S),
    UnhonouredKey(_GS, "enable_jwt_auth", "authenticates clients with JWTs from your identity "
                  "provider", _S),
    UnhonouredKey(_GS, "litellm_jwtauth", "maps JWT claims to teams, users and scopes", _S),
    UnhonouredKey(_GS, "allowed_ips", "accepts requests only from these client addresses", _S,
                  "a firewall in front of rtgate"),
    UnhonouredKey(_GS, "allowed_routes", "lets clients call only these routes", _S),
    UnhonouredKey(_GS, "role_permissions", "limits what each user role may call", _S),
    UnhonouredKey(_GS, "enforced_params", "rejects requests that lack these parameters", _S),
    UnhonouredKey(_GS, "key_management_system", "reads secrets from a key manager (AWS, Google, "
                  "Azure, HashiCorp)", instead="os.environ/NAME"),
    UnhonouredKey(_GS, "key_management_settings", "configures the key manager"),
    UnhonouredKey(_GS, "use_google_kms", "decrypts secrets with Google KMS"),
    UnhonouredKey(_GS, "use_azure_key_vault", "reads secrets from Azure Key Vault"),
    UnhonouredKey(_GS, "user_api_key_cache_ttl", "caches key lookups for this long"),
    UnhonouredKey(_GS, "background_health_checks", "probes every deployment in the background",
                  instead="router_settings.health_check_interval"),
    UnhonouredKey(_GS, "health_check_interval", "sets the background probe interval",
                  instead="router_settings.health_check_interval"),
    UnhonouredKey(_GS, "use_shared_health_check", "shares health state across instances "
                  "through Redis"),
    UnhonouredKey(_GS, "health_check_details", "shows deployment details on /health"),
    UnhonouredKey(_GS, "alerting", "sends budget, outage and slow-request alerts (Slack, "
                  "webhooks)", instead="alert on rtgate's /metrics"),
    UnhonouredKey(_GS, "alert_types", "picks which alerts are sent"),
    UnhonouredKey(_GS, "alert_to_webhook_url", "routes alerts to webhooks"),
    UnhonouredKey(_GS, "alerting_threshold", "alerts on requests slower than this"),
    UnhonouredKey(_GS, "alerting_args", "tunes alerting"),
    UnhonouredKey(_GS, "otel", "exports OpenTelemetry traces", instead="rtgate.event_log"),
    UnhonouredKey(_GS, "allow_non_billable_realtime_protocols", "enables the WebRTC realtime "
                  "routes (/v1/realtime/calls, client_secrets)"),
    UnhonouredKey(_GS, "pass_through_endpoints", "forwards extra routes to providers"),
    UnhonouredKey(_GS, "max_request_size_mb", "rejects larger request bodies",
                  instead="rtgate.limits.max_message_bytes"),
    UnhonouredKey(_GS, "max_response_size_mb", "rejects larger responses",
                  instead="rtgate.limits.max_message_bytes"),
    UnhonouredKey(_GS, "proxy_budget_rescheduler_min_time", "schedules budget resets", _M),
    UnhonouredKey(_GS, "proxy_budget_rescheduler_max_time", "schedules budget resets", _M),
    UnhonouredKey(_GS, "proxy_batch_write_at", "batches spend writes to the database"),
    UnhonouredKey(_GS, "store_prompts_in_spend_logs", "keeps request messages in spend logs"),
    UnhonouredKey(_GS, "maximum_spend_logs_retention_period", "deletes older spend logs"),
    UnhonouredKey(_GS, "forward_client_headers_to_llm_api", "forwards client headers upstream",
                  instead="rtgate forwards OpenAI-Safety-Identifier only"),
    UnhonouredKey(_GS, "infer_model_from_keys", "lists models from provider keys on /models"),
    UnhonouredKey(_GS, "ui_access_mode", "restricts the admin UI"),
    UnhonouredKey(_GS, "custom_key_generate", "checks key generation with your own function"),
    UnhonouredKey(_GS, "custom_sso", "runs your own SSO handler"),
    UnhonouredKey(_GS, "litellm_license", "unlocks LiteLLM enterprise features"),
    # --- litellm_settings (the load_config loop; the rest become litellm.<key>) ---
    UnhonouredKey(_LS, "max_budget", "stops all calls once the proxy has spent this much", _M),
    UnhonouredKey(_LS, "budget_duration", "resets the proxy budget on this period", _M),
    UnhonouredKey(_LS, "max_end_user_budget", "caps what each end user may spend", _M),
    UnhonouredKey(_LS, "max_internal_user_budget", "caps what each internal user may spend", _M),
    UnhonouredKey(_LS, "default_max_internal_user_budget", "gives new internal users this "
                  "budget", _M),
    UnhonouredKey(_LS, "default_key_generate_params", "fills budgets and limits of new keys", _M),
    UnhonouredKey(_LS, "upperbound_key_generate_params", "caps the budgets and limits a new key "
                  "may have", _M),
    UnhonouredKey(_LS, "default_team_settings", "gives teams their budgets and callbacks", _M),
    UnhonouredKey(_LS, "guardrails", "runs these (older-style) guardrails on requests", _S),
    UnhonouredKey(_LS, "failure_callback", "logs failed requests to these loggers",
                  instead="rtgate.event_log.sinks"),
    UnhonouredKey(_LS, "service_callback", "reports its own service health to these loggers"),
    UnhonouredKey(_LS, "turn_off_message_logging", "keeps message content out of its logs",
                  _S, "rtgate.event_log.redact_paths, log_audio: false"),
    UnhonouredKey(_LS, "redact_user_api_key_info", "keeps key details out of its logs",
                  instead="rtgate never logs keys"),
    UnhonouredKey(_LS, "cache", "caches responses (never realtime sessions)"),
    UnhonouredKey(_LS, "cache_params", "configures the response cache"),
    UnhonouredKey(_LS, "drop_params", "drops request parameters a provider does not support"),
    UnhonouredKey(_LS, "modify_params", "rewrites requests a provider would reject"),
    UnhonouredKey(_LS, "set_verbose", "logs debug output", instead="rtgate.log_level: debug"),
    UnhonouredKey(_LS, "json_logs", "logs JSON lines", instead="rtgate.log_format: json"),
    UnhonouredKey(_LS, "request_timeout", "bounds each provider call",
                  instead="rtgate.limits.connect_timeout"),
    UnhonouredKey(_LS, "num_retries", "retries failed calls",
                  instead="router_settings.num_retries"),
    UnhonouredKey(_LS, "fallbacks", "falls back to other model groups",
                  instead="router_settings.fallbacks"),
    UnhonouredKey(_LS, "context_window_fallbacks", "falls back on context-window errors"),
    UnhonouredKey(_LS, "content_policy_fallbacks", "falls back on content-policy errors"),
    UnhonouredKey(_LS, "ssl_verify", "sets TLS verification for every provider call",
                  instead="litellm_params.ssl_verify per deployment"),
    UnhonouredKey(_LS, "force_ipv4", "dials providers over IPv4 only"),
    UnhonouredKey(_LS, "model_group_settings", "marks model groups as forwarding client "
                  "headers"),
    UnhonouredKey(_LS, "custom_provider_map", "adds providers from your own code"),
    UnhonouredKey(_LS, "post_call_rules", "checks responses with your own function", _S),
    UnhonouredKey(_LS, "disable_end_user_cost_tracking", "stops per-end-user cost tracking"),
    # --- router_settings (Router.__init__; LiteLLM warns about other keys) ---
    UnhonouredKey(_RS, "provider_budget_config", "stops routing to a provider that has spent "
                  "its budget", _M),
    UnhonouredKey(_RS, "timeout", "bounds each call", instead="rtgate.limits.connect_timeout"),
    UnhonouredKey(_RS, "stream_timeout", "bounds each streaming call",
                  instead="rtgate.limits.idle_timeout"),
    UnhonouredKey(_RS, "max_retries", "retries a call within one deployment",
                  instead="router_settings.num_retries (across deployments)"),
    UnhonouredKey(_RS, "retry_after", "waits before retrying"),
    UnhonouredKey(_RS, "retry_policy", "sets retries per error type"),
    UnhonouredKey(_RS, "model_group_retry_policy", "sets retries per model group"),
    UnhonouredKey(_RS, "allowed_fails_policy", "sets allowed failures per error type",
                  instead="router_settings.allowed_fails"),
    UnhonouredKey(_RS, "disable_cooldowns", "never cools a deployment down"),
    UnhonouredKey(_RS, "context_window_fallbacks", "falls back on context-window errors"),
    UnhonouredKey(_RS, "content_policy_fallbacks", "falls back on content-policy errors"),
    UnhonouredKey(_RS, "default_fallbacks", "falls back to these groups for every group",
                  instead="router_settings.fallbacks per group"),
    UnhonouredKey(_RS, "max_fallbacks", "bounds how many fallbacks are tried"),
    UnhonouredKey(_RS, "model_group_alias", "serves a group under other names",
                  instead="a deployment per name"),
    UnhonouredKey(_RS, "enable_pre_call_checks", "filters deployments by context window and "
                  "region first"),
    UnhonouredKey(_RS, "routing_strategy_args", "tunes the routing strategy"),
    UnhonouredKey(_RS, "enable_tag_filtering", "routes requests by their tags"),
    UnhonouredKey(_RS, "default_max_parallel_requests", "caps concurrent requests of every "
                  "deployment", _M, "litellm_params.max_parallel_requests per deployment"),
    UnhonouredKey(_RS, "cache_responses", "caches responses"),
    UnhonouredKey(_RS, "client_ttl", "recycles provider clients"),
    UnhonouredKey(_RS, "set_verbose", "logs router debug output",
                  instead="rtgate.log_level: debug"),
    UnhonouredKey(_RS, "debug_level", "sets the router's log level",
                  instead="rtgate.log_level"),
    # --- litellm_params (per deployment; other keys go to the provider) ---
    UnhonouredKey(_LP, "tpm", "caps this deployment's tokens per minute and routes by them", _M),
    UnhonouredKey(_LP, "max_budget", "stops routing to this deployment once it spent this", _M),
    UnhonouredKey(_LP, "budget_duration", "resets this deployment's budget on this period", _M),
    UnhonouredKey(_LP, "timeout", "bounds each call to this deployment",
                  instead="rtgate.limits.connect_timeout"),
    UnhonouredKey(_LP, "stream_timeout", "bounds each streaming call to this deployment",
                  instead="rtgate.limits.idle_timeout"),
    UnhonouredKey(_LP, "max_retries", "retries calls within this deployment",
                  instead="router_settings.num_retries"),
    UnhonouredKey(_LP, "organization", "sends the OpenAI-Organization header"),
    UnhonouredKey(_LP, "litellm_credential_name", "takes this deployment's key from "
                  "credential_list", instead="litellm_params.api_key"),
    UnhonouredKey(_LP, "tags", "routes tagged requests to this deployment"),
    UnhonouredKey(_LP, "mock_response", "answers with this text instead of calling the "
                  "provider", instead="a mock/ deployment"),
    # --- model_info ---
    # --- rtgate.keys entries: LiteLLM's /key/generate fields people copy over ---
    UnhonouredKey(_KEYS, "max_budget", "blocks the key once it has spent this much", _M, "a database key (POST /key/generate)"),
    UnhonouredKey(_KEYS, "budget_duration", "resets the key's budget on this period", _M, "a database key (POST /key/generate)"),
    UnhonouredKey(_KEYS, "soft_budget", "alerts when the key has spent this much", _M),
    UnhonouredKey(_KEYS, "model_max_budget", "caps the key's spend per model", _M),
    UnhonouredKey(_KEYS, "tpm_limit", "caps the key's tokens per minute", _M, "a database key (POST /key/generate)"),
    UnhonouredKey(_KEYS, "max_parallel_requests", "caps the key's concurrent requests", _M,
                  "rtgate.keys[].max_sessions"),
    UnhonouredKey(_KEYS, "expires", "stops accepting the key after this time", _S),
)  # fmt: skip

BY_PLACE: Mapping[tuple[str, str], UnhonouredKey] = {(r.section, r.key): r for r in ROWS}


def unhonoured(section: str, key: str) -> UnhonouredKey | None:
    """The row for ``key`` in ``section``, or None (rtgate reads it or LiteLLM has no such key)."""
    return BY_PLACE.get((section, key))
