# Sourced by run.sh / test.sh: `source scripts/bootstrap.sh [dev]`.
# Creates .venv if missing, installs torch first (CPU wheel where there is no NVIDIA GPU) and then
# the project; skipped entirely when pyproject.toml has not changed since the last install.
MOEDESK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$MOEDESK_ROOT"
VENV="${MOEDESK_VENV:-$MOEDESK_ROOT/.venv}"
PY="$VENV/bin/python"
_extras="${1:-}"

if [ ! -x "$PY" ]; then
    echo "[bootstrap] creating virtualenv $VENV"
    "${PYTHON:-python3}" -m venv "$VENV" || return 1 2>/dev/null || exit 1
fi

# pip, minus the environment's noise about configured local index folders that do not exist.
_pip() {
    "$PY" -m pip "$@" 2>&1 | grep -v "^WARNING: Location '"
    return "${PIPESTATUS[0]}"
}

_spec="."
[ -n "$_extras" ] && _spec=".[$_extras]"
_want="$( (cat pyproject.toml; echo "$_spec") | sha256sum | cut -d' ' -f1)"
_stamp="$VENV/.moedesk-installed"
if ! grep -qx "$_want" "$_stamp" 2>/dev/null; then
    if ! "$PY" -c "import torch" 2>/dev/null; then
        if command -v nvidia-smi >/dev/null 2>&1; then
            echo "[bootstrap] installing torch (GPU build)"
            _pip install -q "torch==${TORCH_VERSION:-2.13.0}" || return 1 2>/dev/null || exit 1
        else
            echo "[bootstrap] installing torch (CPU build)"
            _pip install -q "torch==${TORCH_VERSION:-2.13.0}" \
                ${TORCH_CPU_INDEX:+--extra-index-url "$TORCH_CPU_INDEX"} || return 1 2>/dev/null || exit 1
        fi
    fi
    echo "[bootstrap] installing $_spec"
    _pip install -q -e "$_spec" || return 1 2>/dev/null || exit 1
    # Hugging Face's `kernels` distribution (a dependency of newer transformers) has our kernels/
    # package's import name: with it installed, transformers imports ours in its place and fails
    if "$PY" -m pip show -q kernels >/dev/null 2>&1; then
        echo "[bootstrap] removing the PyPI package 'kernels' (its import name is our kernels/ package's)"
        _pip uninstall -y -q kernels || return 1 2>/dev/null || exit 1
    fi
    echo "$_want" >> "$_stamp"
fi
export PATH="$VENV/bin:$PATH"

# Run a command (in the background: `moedesk_own_session cmd ... &`) in its own session, so that a
# Ctrl-C reaches only the calling script, whose trap stops everything in order (servers and workers
# first, the database last); with a TERM if the script dies without cleaning up (SIGKILL).
moedesk_own_session() {
    local cmd=("$@")
    if command -v setpriv >/dev/null; then cmd=(setpriv --pdeathsig TERM "${cmd[@]}"); fi
    if command -v setsid >/dev/null; then cmd=(setsid "${cmd[@]}"); fi
    exec "${cmd[@]}"
}

# Start PostgreSQL/Redis (embedded, under $1) unless DATABASE_URL and REDIS_URL are both set.
# Sets MOEDESK_SERVICES_PID when it started something; call moedesk_stop_services at exit.
moedesk_start_services() {
    local data="$1"
    MOEDESK_SERVICES_PID=""
    if [ -n "${DATABASE_URL:-}" ] && [ -n "${REDIS_URL:-}" ]; then
        return 0
    fi
    mkdir -p "$data"
    local envfile="$data/services.env"
    rm -f "$envfile"
    moedesk_own_session "$PY" -m webapp.devservices --data "$data" --env-file "$envfile" >"$data/services.log" 2>&1 &
    MOEDESK_SERVICES_PID=$!
    for _ in $(seq 1 600); do
        [ -f "$envfile" ] && break
        if ! kill -0 "$MOEDESK_SERVICES_PID" 2>/dev/null; then
            echo "[services] failed to start; log:" >&2
            cat "$data/services.log" >&2
            return 1
        fi
        sleep 0.2
    done
    [ -f "$envfile" ] || { echo "[services] timed out; see $data/services.log" >&2; return 1; }
    # shellcheck disable=SC1090
    source "$envfile"
    echo "[services] DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL"
}

moedesk_stop_services() {
    if [ -n "${MOEDESK_SERVICES_PID:-}" ] && kill -0 "$MOEDESK_SERVICES_PID" 2>/dev/null; then
        kill -TERM "$MOEDESK_SERVICES_PID" 2>/dev/null
        wait "$MOEDESK_SERVICES_PID" 2>/dev/null
    fi
    MOEDESK_SERVICES_PID=""
}
