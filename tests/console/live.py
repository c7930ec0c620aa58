"""Real-stack helpers for browser tests and benchmarks: uvicorn and Celery worker subprocesses on
the test database and Redis, plus small Playwright helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "docs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    """The URL of the database this test run uses (pytest-django's test_<name>)."""
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def service_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env.update(DATABASE_URL=_database_url(), REDIS_URL=settings.REDIS_URL, DJANGO_DEBUG="1",
               DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost", PYTHONUNBUFFERED="1", DJANGO_LOG_LEVEL="WARNING")
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the servers keep Django's guard
    env.update(extra)
    return env


class Process:
    """A child process whose output goes to a temp file (shown when a test fails)."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"console-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        os.unlink(self.log.name)


def start_server(env: dict[str, str]) -> tuple[Process, str]:
    port = _free_port()
    server = Process([sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1",
                      "--port", str(port), "--log-level", "warning", "--no-access-log"], env, "uvicorn")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited:\n{server.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("uvicorn did not start in 40 s")


def start_worker(env: dict[str, str], queues: str = "triage,billing,technical,sales") -> Process:
    worker = Process([sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queues, "--pool", "threads",
                      "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat",
                      "--loglevel", "WARNING", "-n", f"console-{os.getpid()}@%h"], env, "celery")
    return worker


def login(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/**")


def screenshot(page, name: str, *, full_page: bool = False) -> None:
    """docs/screenshots/<name>.png: written when missing or when MOEDESK_SCREENSHOTS=1, so ordinary
    test runs do not leave modified images in the working tree."""
    path = SCREENSHOTS / f"{name}.png"
    if path.exists() and os.environ.get("MOEDESK_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
