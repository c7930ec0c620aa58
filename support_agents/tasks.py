"""Celery tasks: thin, take ids, idempotent. The work is in router.py / runner.py / services."""
from __future__ import annotations

import logging
import os
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready

log = logging.getLogger("moedesk.tasks")

# Time limits: Celery stamps each message with the *publisher's* CELERY_TASK_SOFT_TIME_LIMIT /
# CELERY_TASK_TIME_LIMIT and the worker's pool enforces them; the runner also checks its own soft limit
# between steps, so a run never overstays whatever the message said.
LIMITS = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(name="support_agents.triage_ticket", **LIMITS)
def triage_ticket(ticket_id: int) -> str:
    from support_agents.services.triage import ticket_triage, triage_failed

    try:
        return ticket_triage(ticket_id)
    except SoftTimeLimitExceeded:
        triage_failed(ticket_id, "triage hit its time limit")
        raise
    except Exception as e:
        log.exception("triage failed", extra={"ticket_id": ticket_id})
        triage_failed(ticket_id, f"triage error: {type(e).__name__}: {e}")
        raise


@shared_task(name="support_agents.run_agent", **LIMITS)
def run_agent(run_id: int) -> str:
    from support_agents.models import AgentRun
    from support_agents.runner import RunTimeLimit, execute_run, run_attempt_failed

    if not AgentRun.objects.filter(pk=run_id).exists():
        return "missing"
    try:
        return execute_run(run_id)
    except (SoftTimeLimitExceeded, RunTimeLimit):
        again = run_attempt_failed(run_id, "agent run hit its soft time limit", final=False)
    except Exception as e:
        log.exception("agent run failed", extra={"run_id": run_id})
        again = run_attempt_failed(run_id, f"{type(e).__name__}: {e}", final=False)
    if again:
        enqueue_run_again(run_id)
    return "retrying" if again else "failed"


def enqueue_run_again(run_id: int) -> None:
    from support_agents.models import AgentRun

    run = AgentRun.objects.select_related("agent").get(pk=run_id)
    run_agent.apply_async((run_id,), queue=run.agent.queue or run.agent.slug, countdown=1)


@worker_ready.connect
def resume_interrupted_work(sender: object, **_: object) -> None:
    """At worker start, publish again the work on this worker's queues that may have no message on its
    way: tickets waiting for triage, queued runs, and runs a stopped worker left running. Runs before
    the consumer reads its first message; a duplicate of a message that was not lost is a no-op."""
    from django.db import connections

    from support_agents.runner import queued_runs, recover_orphaned_runs
    from support_agents.services.triage import triage_requeue_stalled

    try:
        queues = list(sender.app.amqp.queues.consume_from)  # type: ignore[attr-defined]
        if "triage" in queues and (tickets := triage_requeue_stalled()):
            log.info("triage published again at start", extra={"tickets": len(tickets)})
        waiting = queued_runs(queues)  # before recovery, which queues the orphans and publishes them itself
        for run_id in waiting:
            enqueue_run_again(run_id)
        if waiting:
            log.info("queued runs published again at start", extra={"runs": len(waiting)})
        for run_id in recover_orphaned_runs(queues):
            log.warning("resuming a run its worker left running", extra={"run_id": run_id})
            enqueue_run_again(run_id)
    except Exception:  # the worker must start even when the database or broker is briefly unreachable
        log.exception("could not check for interrupted work")
    finally:
        connections.close_all()  # the pool's next forked child must not share this process's connection


_warmed_in: int | None = None  # the pid that ran warm_models (a forked child starts over)


@worker_ready.connect
def preload_models_in_thread_pool(sender: object, **_: object) -> None:
    """The same warm-up for a worker whose pool runs tasks in its own process (``--pool threads``,
    gevent, eventlet), which has no ``worker_process_init``. Celery sends ``worker_ready`` after the
    consumer is set up and before its loop reads the first message, so here too the tickets wait in
    the queue, not inside a task's time limit. A prefork parent never loads models (its children do),
    and a solo pool has already warmed through ``worker_process_init``."""
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if not isinstance(getattr(sender, "pool", None), PreforkPool) and _warmed_in != os.getpid():
        preload_models()


@worker_process_init.connect
def preload_models(**_: object) -> None:
    """Load and warm the default router and agent model in each worker process before it takes a task,
    so no ticket pays for loading, the first (slow) forward pass or the compilation of the decode step
    (~15 s per graph on 2 idle cores, minutes when several workers compile at once on busy ones).
    A prefork child gets its first task only after this returns, so the wait is spent with the message
    in the queue, not inside a task's time limit; the parent waits for it up to
    ``worker_proc_alive_timeout`` (raised in ``webapp.celery`` from Celery's 4 s default)."""
    if os.environ.get("MOEDESK_PRELOAD", "1") == "1":
        warm_models()


def warm_models() -> None:
    global _warmed_in
    _warmed_in = os.getpid()
    started = time.monotonic()
    try:
        from support_agents.inference import agent_path, get_generator, get_model, router_path

        if (router_path() / "config.json").exists():
            router = get_model(router_path())
            router.classify([router.tokenizer.encode("warm up")])
        if (agent_path() / "config.json").exists():
            agent = get_generator(agent_path())
            ids = agent.tokenizer.encode("warm up")
            agent.generate([ids], max_new_tokens=3)  # the batch-1 decode graph
            agent.generate([ids, ids], max_new_tokens=3)  # and the one for larger batches
        log.info("models warm", extra={"seconds": round(time.monotonic() - started, 2)})
    except Exception:  # a broken checkpoint must not stop the worker; the first task reports it
        log.exception("model preload failed")
