"""The realtime URL of an OpenAI-family deployment: ``api_base`` joined as LiteLLM joins it.

Pure string work (no I/O), shared by the OpenAI, xAI and Azure providers, so a
LiteLLM config's ``api_base`` dials the same URL under rtgate as under LiteLLM:

* the scheme: ``http`` becomes ``ws``, ``https`` becomes ``wss``; ``ws``/``wss`` stay;
* OpenAI and xAI: a path ending in ``/v1/realtime`` is kept, one ending in ``/v1``
  gets ``/realtime``, anything else (a bare host, a proxy prefix) gets
  ``/v1/realtime``; trailing slashes change nothing;
* Azure: the resource host (and any proxy prefix before ``/openai``) gets
  ``/openai/v1/realtime`` (GA) or ``/openai/realtime`` (preview); an ``api_base``
  that already ends in one of Azure's ``/openai`` paths is not doubled;
* query parameters on ``api_base`` are kept and merged with the session's own
  (``model``/``intent``, Azure's ``api-version``/``deployment``): the session's
  keys come first, and a key given on ``api_base`` keeps ``api_base``'s value.

LiteLLM's OpenAI handler (``OpenAIRealtime._construct_url``) builds the URL this
way with httpx's ``URL`` and ``QueryParams.merge``; its Azure handler instead
pastes the path after ``api_base`` as written, which breaks on a trailing
slash, ``http://``, a query string or an ``/openai`` suffix. rtgate applies the
OpenAI handler's normalising to Azure too and dials what LiteLLM dials for the
spelling that works there (``https://RESOURCE.openai.azure.com``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}

AZURE_GA_PATH = "/openai/v1/realtime"
AZURE_PREVIEW_PATH = "/openai/realtime"
# Longest first: the first suffix that matches is the one removed.
_AZURE_SUFFIXES = (AZURE_GA_PATH, AZURE_PREVIEW_PATH, "/openai/v1", "/openai")


def api_base_problems(api_base: str | None) -> list[str]:
    """Why ``api_base`` cannot be dialed, as sentences (empty: fine or unset)."""
    if api_base is None:
        return []
    parts = urlsplit(api_base)
    if parts.scheme not in _WEBSOCKET_SCHEMES:
        return [f"api_base {api_base!r} must start with https://, http://, wss:// or ws://"]
    problems = []
    if not parts.hostname:
        problems.append(f"api_base {api_base!r} has no host")
    if parts.fragment or api_base.endswith("#"):
        problems.append(f"api_base {api_base!r} must not have a #fragment")
    return problems


def openai_realtime_url(api_base: str, query: Iterable[tuple[str, str]]) -> str:
    """The realtime URL of an OpenAI-compatible ``api_base`` (OpenAI, xAI, any proxy)."""

    def realtime_path(base_path: str) -> str:
        if base_path.endswith("/v1/realtime"):
            return base_path
        if base_path.endswith("/v1"):
            return base_path + "/realtime"
        return base_path + "/v1/realtime"

    return _join(api_base, realtime_path, query)


def azure_realtime_url(api_base: str, path: str, query: Iterable[tuple[str, str]]) -> str:
    """The realtime URL of an Azure resource: ``path`` is AZURE_GA_PATH or AZURE_PREVIEW_PATH."""

    def resource_path(base_path: str) -> str:
        for suffix in _AZURE_SUFFIXES:
            if base_path.endswith(suffix):
                return base_path[: -len(suffix)] + path
        return base_path + path

    return _join(api_base, resource_path, query)


_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


def calls_url(realtime_url: str) -> str:
    """A realtime URL's WebRTC calls endpoint, over HTTP: ``{realtime path}/calls``,
    query kept (``wss://H/v1/realtime`` becomes ``https://H/v1/realtime/calls``)."""
    parts = urlsplit(realtime_url)
    scheme = _HTTP_SCHEMES.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path + "/calls", parts.query, ""))


def _join(api_base: str, place: Callable[[str], str], query: Iterable[tuple[str, str]]) -> str:
    parts = urlsplit(api_base)
    scheme = _WEBSOCKET_SCHEMES.get(parts.scheme, parts.scheme)
    path = place(parts.path.rstrip("/"))
    return urlunsplit((scheme, parts.netloc, path, merge_query(query, parts.query), ""))


def merge_query(session: Iterable[tuple[str, str]], on_base: str) -> str:
    """``session``'s parameters merged with those already on ``api_base``, encoded.

    The same merge as httpx's ``QueryParams.merge`` that LiteLLM uses: every key
    keeps its first position, and a key on ``api_base`` takes all of ``api_base``'s
    values for it (repeated keys stay repeated).
    """
    merged: dict[str, list[str]] = {}
    for key, value in session:
        merged.setdefault(key, []).append(value)
    from_base: dict[str, list[str]] = {}
    for key, value in parse_qsl(on_base, keep_blank_values=True):
        from_base.setdefault(key, []).append(value)
    merged.update(from_base)
    return urlencode([(key, value) for key, values in merged.items() for value in values])
