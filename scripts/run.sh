#!/usr/bin/env bash
# Run MoEDesk: services (embedded when DATABASE_URL/REDIS_URL are unset), migrations, demo data,
# the ASGI server and one Celery worker per queue. Ctrl-C stops everything; data stays in var/.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" ""

HOST="${MOEDESK_HOST:-127.0.0.1}"
PORT="${MOEDESK_PORT:-8000}"
DATA="${MOEDESK_DATA:-$MOEDESK_ROOT/var}"
mkdir -p "$DATA/logs"

export DJANGO_DEBUG="${DJANGO_DEBUG:-0}"
# Plain http on this machine: secure-only cookies would make login impossible.
export DJANGO_SECURE_COOKIES="${DJANGO_SECURE_COOKIES:-0}"
export DJANGO_ALLOWED_HOSTS="${DJANGO_ALLOWED_HOSTS:-localhost,127.0.0.1,$HOST}"
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
    [ -s "$DATA/secret_key" ] || (umask 077; "$PY" -c "import secrets; print(secrets.token_urlsafe(50))" > "$DATA/secret_key")
    DJANGO_SECRET_KEY="$(cat "$DATA/secret_key")"
    export DJANGO_SECRET_KEY
fi

PIDS=()
cleanup() {
    trap - INT TERM HUP EXIT
    echo
    echo "[run] stopping..."
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    moedesk_stop_services
    echo "[run] stopped"
    exit 0
}
trap cleanup INT TERM HUP EXIT

moedesk_start_services "$DATA"
# Everything a second terminal needs to run manage.py against this instance.
{
    echo "export DATABASE_URL='$DATABASE_URL' REDIS_URL='$REDIS_URL'"
    echo "export DJANGO_SECRET_KEY='$DJANGO_SECRET_KEY' DJANGO_DEBUG='$DJANGO_DEBUG'"
    echo "export DJANGO_SECURE_COOKIES='$DJANGO_SECURE_COOKIES' DJANGO_ALLOWED_HOSTS='$DJANGO_ALLOWED_HOSTS'"
} > "$DATA/env.sh"
chmod 600 "$DATA/env.sh"
"$PY" manage.py migrate --noinput
"$PY" manage.py seed_demo | tee "$DATA/demo-logins.txt"

# Web: a shared psycopg pool (requests run in many threads). Workers: one kept connection each.
# Each in its own session: Ctrl-C reaches this script only, which stops the server and workers first
# and the database and Redis last, instead of everything at once.
# webapp.serve is uvicorn; with several web workers each gets its own listener (see its docstring).
DATABASE_POOL="${DATABASE_POOL:-1}" moedesk_own_session "$PY" -m webapp.serve --host "$HOST" --port "$PORT" \
    --workers "${MOEDESK_WEB_WORKERS:-1}" --log-level warning >"$DATA/logs/web.log" 2>&1 &
PIDS+=($!)
# Workers compile their decode step at start (MOEDESK_COMPILE); inductor's cache under var/ keeps
# that to seconds on the next start, also after /tmp was cleared.
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$DATA/cache/inductor}"
for q in ${MOEDESK_QUEUES:-triage billing technical sales}; do
    DATABASE_POOL=0 DATABASE_CONN_MAX_AGE="${DATABASE_CONN_MAX_AGE:-600}" moedesk_own_session "$PY" -m celery -A webapp worker -Q "$q" -n "$q@%h" \
        --concurrency "${MOEDESK_WORKER_CONCURRENCY:-1}" --loglevel INFO >"$DATA/logs/worker-$q.log" 2>&1 &
    PIDS+=($!)
done

for _ in $(seq 1 100); do
    "$PY" -c "import httpx,sys; httpx.get('http://$HOST:$PORT/accounts/login/', timeout=1)" 2>/dev/null && break
    sleep 0.3
done
cat <<MSG

MoEDesk is running.
  Console:   http://$HOST:$PORT/console/
  Admin:     http://$HOST:$PORT/admin/
  API docs:  http://$HOST:$PORT/api/docs
  Logins:    see above (also in $DATA/demo-logins.txt)
  Try:       source $DATA/env.sh && $PY manage.py send_ticket --source demo --url http://$HOST:$PORT \\
               --email jane@example.com "I was charged twice for one card payment"
  Logs:      $DATA/logs/
Press Ctrl-C to stop.
MSG
wait -n "${PIDS[@]}" || true
echo "[run] a process exited; see $DATA/logs/"
