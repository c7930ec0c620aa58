#!/usr/bin/env bash
# Run the test suite: bootstrap (.venv with dev extras), services (embedded when DATABASE_URL /
# REDIS_URL are unset), then pytest. Exit code = pytest's. Extra arguments go to pytest.
set -uo pipefail
source "$(dirname "$0")/bootstrap.sh" dev || exit 1

# Browser tests drive Debian's chromium; they skip (with a reason) if it cannot be installed.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing chromium for browser tests"
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
        apt-get install -y -q chromium >/dev/null 2>&1; }) || echo "[test] chromium not installed; browser tests will skip"
fi

export DJANGO_DEBUG="${DJANGO_DEBUG:-0}"
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-test-only-secret-key-not-for-production}"
export DJANGO_SECURE_COOKIES="${DJANGO_SECURE_COOKIES:-0}"
# Tests load many small models; compiling each one's decode step would add minutes. The compiled
# path has its own tests, which turn it on themselves.
export MOEDESK_COMPILE="${MOEDESK_COMPILE:-0}"

trap moedesk_stop_services EXIT INT TERM HUP
moedesk_start_services "${MOEDESK_TEST_DATA:-$MOEDESK_ROOT/var/test}" || exit 1

"$PY" -m pytest --timeout="${PYTEST_TIMEOUT:-600}" "$@"
rc=$?
if [ "$rc" = 5 ]; then
    # "no tests collected": a filter that matched nothing is fine, an empty full run is not.
    if [ "$#" -gt 0 ]; then
        echo "[test] pytest collected no tests for: $*"
        rc=0
    else
        echo "[test] pytest collected no tests at all" >&2
        rc=1
    fi
fi
exit "$rc"
