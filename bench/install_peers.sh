#!/usr/bin/env bash
# Install the proxies rtgate is benchmarked against, outside the project:
#   nginx  - Debian's nginx-light (needs root and apt; skipped otherwise)
#   LiteLLM - its proxy, in its own virtual environment ($LITELLM_VENV, default
#             /tmp/litellm-venv, the path bench/rivals.py looks in)
# Neither is ever a dependency of rtgate; `make bench` runs this first and the
# benchmark skips whichever peer is still missing.
set -u
LITELLM_VENV="${LITELLM_VENV:-/tmp/litellm-venv}"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing nginx-light (apt)"
        apt-get install -y -qq nginx-light >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nginx-light >/dev/null 2>&1; } \
            || echo "nginx could not be installed: the benchmark runs without it"
    else
        echo "nginx not found (install nginx-light as root to compare with it)"
    fi
fi

if [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
    echo "installing LiteLLM $LITELLM_VERSION into $LITELLM_VENV"
    python3 -m venv "$LITELLM_VENV" \
        && "$LITELLM_VENV/bin/pip" install -q --upgrade pip \
        && "$LITELLM_VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" \
        || echo "LiteLLM could not be installed: the benchmark runs without it"
fi
exit 0
