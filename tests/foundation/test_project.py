import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


def _settings_in_subprocess(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='webapp.settings'; "
         "from django.conf import settings; print(settings.DEBUG, settings.ALLOWED_HOSTS)"],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_production_defaults_need_a_secret_key_and_keep_debug_off():
    refused = _settings_in_subprocess()
    assert refused.returncode != 0 and "DJANGO_SECRET_KEY" in refused.stderr
    ok = _settings_in_subprocess(DJANGO_SECRET_KEY="k" * 50)
    assert ok.returncode == 0 and ok.stdout.startswith("False")
    dev = _settings_in_subprocess(DJANGO_DEBUG="1")
    assert dev.returncode == 0 and dev.stdout.startswith("True")


def test_sqlite_is_refused():
    out = _settings_in_subprocess(DJANGO_SECRET_KEY="k" * 50, DATABASE_URL="sqlite:///x.db")
    assert out.returncode != 0 and "PostgreSQL" in out.stderr


def test_celery_app_queues_and_reliability_settings():
    from webapp.celery import app

    conf = app.conf
    assert app.main == "webapp"
    assert {q.name for q in conf.task_queues} == {"triage", "billing", "technical", "sales"}
    assert conf.task_default_queue == "triage"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert conf.broker_url.startswith("redis://")


def test_asgi_application_routes_http_and_websocket():
    from webapp.asgi import application

    assert set(application.application_mapping) == {"http", "websocket"}


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "support_agents", "--check", "--dry-run", verbosity=0)


def test_devservices_uses_given_urls_without_starting_anything(monkeypatch, tmp_path):
    from webapp import devservices

    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/db")
    monkeypatch.setenv("REDIS_URL", "redis://h:1/0")
    with devservices.services(tmp_path) as urls:
        assert urls == {"DATABASE_URL": "postgres://u@h/db", "REDIS_URL": "redis://h:1/0"}
    assert not any(tmp_path.iterdir())


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert [line.split()[0] for line in block.strip().splitlines()] == [
        "./scripts/run.sh",
        "./scripts/test.sh",
    ]
    assert os.access(ROOT / "scripts/run.sh", os.X_OK) and os.access(ROOT / "scripts/test.sh", os.X_OK)
    assert "scripts/test.sh" in (ROOT / ".ci/run").read_text()


def test_embedded_redis_keeps_queued_tasks_across_a_restart(tmp_path):
    import redis

    from webapp import devservices

    with devservices.embedded_redis(tmp_path) as url:
        redis.Redis.from_url(url).lpush("triage", "a queued task")
    with devservices.embedded_redis(tmp_path) as url:
        assert redis.Redis.from_url(url).lrange("triage", 0, -1) == [b"a queued task"]
