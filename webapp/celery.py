"""Celery app: `celery -A webapp worker -Q triage,billing,technical,sales`."""

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")

AGENT_QUEUES = ("billing", "technical", "sales")
QUEUES = ("triage", *AGENT_QUEUES)

app.conf.update(
    # Each queue has its own exchange + routing key: a bare Queue(name) would bind every queue to the
    # default exchange/key, so one message would land in all four queues.
    task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
    task_default_exchange="triage",
    task_default_routing_key="triage",
    task_default_queue="triage",
    # A task is acknowledged only after it finished, and re-queued if its worker dies, so a crash
    # mid-run is redelivered; tasks must therefore be idempotent (they take ids, state is in PG).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # A pool process warms its models before it reports ready (support_agents.tasks.preload_models):
    # give it that long instead of Celery's 4 s, after which the parent would kill it.
    worker_proc_alive_timeout=float(os.environ.get("CELERY_WORKER_PROC_ALIVE_TIMEOUT", "900")),
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    result_expires=3600,
    timezone="UTC",
    broker_connection_retry_on_startup=True,
    # Redis re-delivers unacked messages after this; must exceed the hard time limit.
    broker_transport_options={"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))},
    # Publishing happens inside web requests: fail fast rather than hang if Redis is gone.
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()
