"""Pipeline fixtures: tiny checkpoints, seeded agents/procedures/bank, and a real Celery worker."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_ROUTER = ROOT / "checkpoints" / "router"
SHIPPED_AGENT = ROOT / "checkpoints" / "agent"


def shipped(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory):
    from tests.pipeline.tiny import make_tiny_checkpoints

    return make_tiny_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def model_env(tiny_ckpts, monkeypatch):
    """In-process runs use the tiny agent model unless a test asks for the shipped one."""
    monkeypatch.setenv("MOEDESK_ROUTER_PATH", str(tiny_ckpts["router"]))
    monkeypatch.setenv("MOEDESK_AGENT_PATH", str(tiny_ckpts["agent"]))
    return tiny_ckpts


@pytest.fixture
def pipeline(db, agent_profiles):
    """Agent profiles with the shipped procedures and allow-lists, bank catalogue, prices."""
    from support_agents.models import AgentProcedure, AgentProfile, PriceSetting
    from support_agents.procedures.seed import procedures_seed
    from support_agents.services.bank_demo import bank_catalog_seed

    procedures_seed(AgentProfile, AgentProcedure)
    bank_catalog_seed()
    PriceSetting.objects.get_or_create(device="cpu", defaults={"price_per_hour": Decimal("0.05")})
    PriceSetting.objects.get_or_create(device="gpu", defaults={"price_per_hour": Decimal("2.00")})
    return {p.slug: p for p in AgentProfile.objects.all()}


def make_bank_customer(email: str, name: str, *, card_payments=(("Tesco", "250.00"),), card_status="active",
                       identity="verified"):
    """A customer with one account, one active physical card and the given card payments (newest first)."""
    from django.utils import timezone

    from support_agents.models import (
        Account,
        Card,
        Customer,
        IdentityVerification,
        PendingTransfer,
        Transaction,
    )

    c = Customer.objects.create(email=email, name=name)
    now = timezone.now()
    acc = Account.objects.create(customer=c, number=f"GB00TEST{c.pk:010d}", currency="GBP", balance=Decimal("1000"),
                                 opened_at=now - dt.timedelta(days=400))
    card = Card.objects.create(customer=c, account=acc, last4=f"{4000 + c.pk % 1000:04d}", status=card_status,
                               expires_on=(now + dt.timedelta(days=400)).date(), issued_at=now - dt.timedelta(days=300))
    for i, (merchant, amount) in enumerate(card_payments):
        Transaction.objects.create(account=acc, card=card, reference=f"TT{c.pk:05d}{i:03d}", kind="card_payment",
                                   merchant=merchant, amount=Decimal(amount), currency="GBP",
                                   status="pending" if "pending" in merchant.lower() else "completed",
                                   created_at=now - dt.timedelta(days=i + 1))
    PendingTransfer.objects.create(account=acc, reference=f"PT{c.pk:06d}", recipient="J. Doe", amount=Decimal("40"),
                                   created_at=now, expected_at=now + dt.timedelta(hours=5))
    IdentityVerification.objects.create(customer=c, status=identity)
    return c


@pytest.fixture
def bank_customer(pipeline):
    return make_bank_customer("ada.lovelace@example.com", "Ada Lovelace")


@pytest.fixture
def other_customer(pipeline):
    return make_bank_customer("charles.babbage@example.com", "Charles Babbage",
                              card_payments=(("Harrods", "999.99"),))


def wait_for(pred, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Worker:
    """`celery -A webapp worker` in a subprocess, on the test database and Redis."""

    def __init__(self, env: dict, log: Path, queues: str = "triage,billing,technical,sales", concurrency: int = 1,
                 pool: str = "prefork"):
        self.env, self.log, self.queues, self.concurrency, self.pool = env, log, queues, concurrency, pool
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> Worker:
        self.logf = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", self.queues, "-c", str(self.concurrency),
             "-P", self.pool, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
             "-n", f"pipeline-test-{os.getpid()}-{time.monotonic_ns()}@%h"],
            cwd=ROOT, env=self.env, stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: b"ready." in self.log.read_bytes() or self.proc.poll() is not None, timeout,
                 what="celery worker ready")
        if self.proc.poll() is not None:
            raise RuntimeError(f"celery worker exited: {self.log.read_text()[-3000:]}")
        return self

    def children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.logf.close()


def worker_env(tiny_ckpts, **extra) -> dict:
    from django.conf import settings

    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "1"),
           "MOEDESK_ROUTER_PATH": str(SHIPPED_ROUTER if shipped(SHIPPED_ROUTER) else tiny_ckpts["router"]),
           "MOEDESK_AGENT_PATH": str(tiny_ckpts["agent"]), "PYTHONUNBUFFERED": "1"}
    env.setdefault("DJANGO_SECRET_KEY", "pipeline-tests-only")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def purge_broker() -> None:
    from webapp.celery import app

    app.control.purge()


@pytest.fixture(scope="session")
def celery_worker_proc(django_db_setup, django_db_blocker, tiny_ckpts, tmp_path_factory):
    """One worker for the e2e tests (all queues, prefork, one child)."""
    purge_broker()
    w = Worker(worker_env(tiny_ckpts), tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield w
    w.stop()
