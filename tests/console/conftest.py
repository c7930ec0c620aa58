"""Browser-test fixtures: a real uvicorn server against the pytest-django test database and the
real Redis, driven by Debian's Chromium via Playwright (skipped cleanly without Chromium)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .live import CHROMIUM, CHROMIUM_ARGS, service_env, start_server


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's loop must be gone before the async websocket tests start theirs.
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop in this thread; the test's own ORM calls are still
    # plain synchronous code, so Django's async-safety guard is lifted while the browser is up.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    # launch() gives every run a fresh, empty temporary profile (user data dir) of its own.
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def live_server_url(transactional_db):
    """uvicorn serving the ASGI app (HTTP + websockets) on the test database."""
    server, url = start_server(service_env())
    try:
        yield url
    finally:
        out = server.output()
        server.stop()
        if "Traceback" in out:
            print(f"--- uvicorn log ---\n{out}")


@pytest.fixture
def page(browser, live_server_url):
    context = browser.new_context(base_url=live_server_url, viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()
