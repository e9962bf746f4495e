# Shared by scripts/run, scripts/test and scripts/bench: sourced, not run.
# ensure_venv creates .venv and installs convoy (editable, with dev extras) on
# first use, and again whenever pyproject.toml changes; otherwise it is a no-op.

CONVOY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CONVOY_VENV:-$CONVOY_ROOT/.venv}"

find_python() {
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "convoy needs Python 3.11 or newer" >&2
    return 1
}

ensure_venv() {
    local stamp="$VENV/.convoy-installed"
    local wanted
    wanted="$(sha256sum "$CONVOY_ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(find_python)"
        if ! "$python" -m venv "$VENV" 2>/dev/null; then
            # Debian splits venv out of the interpreter.
            apt-get update -q && apt-get install -y -q python3-venv
            "$python" -m venv "$VENV"
        fi
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$CONVOY_ROOT[all,dev]"
    echo "$wanted" >"$stamp"
}

docker_answers() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

# The web console's browser tests drive Debian's chromium (Playwright's own browser download
# is not used); the console links xterm.js from Debian's node-xterm (its CommonJS modules;
# libjs-xterm, which it depends on, has only a stub). Installed once, quietly; a no-op when
# both are there. Where apt-get is missing or not allowed, the browser tests are
# skipped (they say why) and the console shows terminals as plain text.
ensure_console_packages() {
    local missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    [ -f /usr/share/nodejs/xterm/lib/xterm.js ] || missing+=(node-xterm)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "== no apt-get: ${missing[*]} not installed (browser tests will be skipped)" >&2
        return 0
    fi
    echo "== installing ${missing[*]} (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        "${missing[@]}" >/dev/null 2>&1 ||
        { "${sudo[@]}" apt-get update -q >/dev/null 2>&1 &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                "${missing[@]}" >/dev/null; } ||
        echo "== could not install ${missing[*]} (browser tests will be skipped)" >&2
}

# The swarm harness (scripts/swarm-cluster) builds a multi-node Swarm from network
# namespaces, a bridge and one dockerd per node: it needs iproute2 (ip), util-linux
# (nsenter), iptables and the Docker engine itself. Installed once, quietly, when missing
# and apt-get is there; otherwise the swarm tests are skipped with the reason.
ensure_swarm_packages() {
    local missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "== no apt-get: ${missing[*]} not installed (swarm tests will be skipped)" >&2
        return 0
    fi
    echo "== installing ${missing[*]} (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
        { "${sudo[@]}" apt-get update -q >/dev/null 2>&1 &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
        echo "== could not install ${missing[*]} (swarm tests will be skipped)" >&2
}
