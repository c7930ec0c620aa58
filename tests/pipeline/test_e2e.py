"""End to end with a real Celery worker subprocess, PostgreSQL and Redis (no eager mode)."""
from __future__ import annotations

import io
import json
import os
import signal
from decimal import Decimal

import pytest

from support_agents.models import (
    AgentProcedure,
    AgentRun,
    Approval,
    Handoff,
    Message,
    Refund,
    RunStep,
    Ticket,
    ToolInvocation,
)
from tests.pipeline.conftest import SHIPPED_ROUTER, Worker, purge_broker, shipped, wait_for, worker_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def status_of(ticket: Ticket) -> str:
    return Ticket.objects.values_list("status", flat=True).get(pk=ticket.pk)


def wait_status(ticket: Ticket, *statuses: str, timeout: float = 90) -> str:
    return wait_for(lambda: status_of(ticket) in statuses and status_of(ticket), timeout,
                    what=f"ticket {ticket.pk} in {statuses} (now {status_of(ticket)})")


def routed_ticket(customer, agent_slug: str, intent: str, body: str, user) -> Ticket:
    """A ticket whose intent is known, started through the operator's reassign service.

    Created without intake so triage (whose routing depends on the router model) does not race the
    reassignment; the intake -> triage path has its own test above.
    """
    from support_agents.models import Message
    from support_agents.services.agents import ticket_reassign

    ticket = Ticket.objects.create(customer=customer, body=body, subject=body[:60], channel="email", intent=intent)
    Message.objects.create(ticket=ticket, author_kind="customer", body=body)
    ticket_reassign(ticket, agent_slug, user)
    return ticket


@pytest.mark.skipif(not shipped(SHIPPED_ROUTER), reason="needs the shipped router checkpoint (checkpoints/router)")
def test_webhook_to_reply_draft_through_triage_and_the_right_agent(celery_worker_proc, pipeline, intake_source,
                                                                   bank_customer, client):
    from tests.helpers import DEMO_SECRET, webhook_headers

    cases = [("I would like to cancel a transfer I made by mistake.", "billing"),
             ("How do I activate my new card?", "technical"),
             ("Which countries do you support?", "sales")]
    tickets = []
    for text, queue in cases:
        body = json.dumps({"customer": {"email": bank_customer.email, "name": bank_customer.name},
                           "body": text, "channel": "email"}).encode()
        headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in webhook_headers(DEMO_SECRET, body).items()}
        r = client.post(f"/api/intake/{intake_source.name}/", body, content_type="application/json", **headers)
        assert r.status_code == 202, r.content
        tickets.append((Ticket.objects.get(pk=Ticket.id_from_reference(r.json()["ticket"])), queue))
    ood = json.dumps({"customer": {"email": bank_customer.email}, "body": "Can you recommend a good pasta recipe?"})
    headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in webhook_headers(DEMO_SECRET, ood.encode()).items()}
    r = client.post(f"/api/intake/{intake_source.name}/", ood.encode(), content_type="application/json", **headers)
    human = Ticket.objects.get(pk=Ticket.id_from_reference(r.json()["ticket"]))
    for ticket, queue in tickets:
        assert wait_status(ticket, "draft_ready", "escalated", "needs_triage", "failed") == "draft_ready"
        ticket.refresh_from_db()
        assert ticket.queue == queue and ticket.assigned_agent.slug == queue and ticket.confidence > 0
        run = AgentRun.objects.get(ticket=ticket)
        assert run.status == "completed" and run.agent.slug == queue and run.intent == ticket.intent
        assert RunStep.objects.filter(run=run, kind="model", name="classify").exists()
        draft = Message.objects.get(ticket=ticket, author_kind="agent")
        assert draft.is_draft and draft.body.strip()
        h = Handoff.objects.get(ticket=ticket, from_label="router")
        assert h.to_label == queue
    # not a banking request: a human triages it, no agent run is started
    assert wait_status(human, "needs_triage") == "needs_triage"
    human.refresh_from_db()
    assert human.queue == "human" and not AgentRun.objects.filter(ticket=human).exists()
    assert Handoff.objects.get(ticket=human).to_label == "human"


def test_refund_over_limit_waits_for_approval_then_completes(celery_worker_proc, pipeline, bank_customer,
                                                             operator_user):
    from support_agents.services.agents import approval_approve

    ticket = routed_ticket(bank_customer, "billing", "request_refund", "Please refund my 250.00 payment at Tesco",
                           operator_user)
    wait_status(ticket, "awaiting_approval")
    approval = Approval.objects.get(ticket=ticket, status="pending")
    assert approval.tool == "issue_refund" and Decimal(approval.args["amount"]) == Decimal("250.00")
    assert not Refund.objects.exists()
    approval_approve(approval, operator_user)
    wait_status(ticket, "draft_ready")
    refund = Refund.objects.get()
    assert refund.amount == Decimal("250.00") and refund.transaction.account.customer == bank_customer
    run = AgentRun.objects.get(ticket=ticket, status="completed")
    assert run.approvals.get().status == "approved"
    assert "250.00 GBP" in Message.objects.get(ticket=ticket, author_kind="agent").body


def test_technical_ticket_that_is_billing_is_handed_off_with_summary(celery_worker_proc, pipeline, bank_customer,
                                                                     operator_user):
    body = "My card payment at Tesco was declined but the money was still taken from my account"
    ticket = routed_ticket(bank_customer, "technical", "declined_card_payment", body, operator_user)
    wait_status(ticket, "draft_ready")
    h = Handoff.objects.get(ticket=ticket, from_label="technical")
    assert h.to_label == "billing" and h.reason
    summary = h.context_summary
    assert summary["from_agent"] == "technical" and summary["intent"] == "pending_card_payment"
    assert {d["tool"] for d in summary["done"]} == {"card_status", "incident_status"}
    billing_run = AgentRun.objects.get(ticket=ticket, agent__slug="billing")
    assert billing_run.status == "completed" and billing_run.context == summary
    ticket.refresh_from_db()
    assert ticket.queue == "billing" and ticket.assigned_agent.slug == "billing"


def test_ping_pong_handoff_ends_with_human_escalation(celery_worker_proc, pipeline, bank_customer, operator_user):
    proc = AgentProcedure.objects.get(agent=pipeline["billing"], intent="pending_card_payment")
    proc.definition = {**proc.definition, "steps": [
        {"id": "back", "handoff": {"to": "technical", "intent": "declined_card_payment", "reason": "card issue"}}]}
    proc.save()
    body = "My card payment at Tesco was declined but the money was taken"
    ticket = routed_ticket(bank_customer, "technical", "declined_card_payment", body, operator_user)
    wait_status(ticket, "escalated")
    labels = list(Handoff.objects.filter(ticket=ticket).values_list("from_label", "to_label"))
    assert ("technical", "billing") in labels and labels[-1] == ("billing", "human")
    assert "cycle" in Handoff.objects.filter(ticket=ticket).last().reason
    assert AgentRun.objects.filter(ticket=ticket, agent__slug="technical").count() == 1


def test_disallowed_tool_call_is_refused(celery_worker_proc, pipeline, bank_customer, operator_user):
    proc = AgentProcedure.objects.get(agent=pipeline["billing"], intent="card_payment_not_recognised")
    proc.definition = {**proc.definition, "steps": [{"id": "f", "tool": "freeze_card", "args": {}}]}
    proc.save()
    ticket = routed_ticket(bank_customer, "billing", "card_payment_not_recognised", "I don't know this payment",
                           operator_user)
    wait_status(ticket, "escalated")
    inv = ToolInvocation.objects.get(ticket=ticket, tool="freeze_card")
    assert inv.status == "refused"
    assert bank_customer.cards.filter(status="frozen").count() == 0


def test_sigkill_mid_run_gives_one_completed_run_and_one_refund(pipeline, bank_customer, operator_user,
                                                               tiny_ckpts, tmp_path, celery_worker_proc):
    # A dedicated worker that pauses right after the refund committed, so the kill lands mid-run.
    celery_worker_proc.stop()
    purge_broker()
    w = Worker(worker_env(tiny_ckpts, MOEDESK_TEST_SLOW_TOOL="after:issue_refund", MOEDESK_TEST_SLOW_SECONDS=30),
               tmp_path / "worker.log").start()
    try:
        bank_customer.accounts.first().transactions.filter(merchant="Tesco").update(amount=Decimal("60.00"))
        ticket = routed_ticket(bank_customer, "billing", "request_refund", "Refund my Tesco payment", operator_user)
        wait_for(lambda: Refund.objects.exists(), 90, what="refund committed")
        run = AgentRun.objects.get(ticket=ticket)
        assert run.status == "running"
        children = w.children()
        assert children, "no pool process"
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        # reject_on_worker_lost: the message goes back to the queue and a new pool process resumes the run
        # (generous: a fresh pool process imports Django and loads the models, slow on a busy 2-core box)
        wait_status(ticket, "draft_ready", timeout=240)
    finally:
        w.stop()
        celery_worker_proc.start()
    run.refresh_from_db()
    assert AgentRun.objects.filter(ticket=ticket).count() == 1
    assert run.status == "completed" and run.attempts == 2
    assert Refund.objects.count() == 1
    assert ToolInvocation.objects.filter(ticket=ticket, tool="issue_refund").count() == 1
    assert Message.objects.filter(ticket=ticket, author_kind="agent").count() == 1


def test_thread_pool_worker_warms_its_models_before_it_reads_a_task(pipeline, bank_customer, operator_user,
                                                                     tiny_ckpts, tmp_path, celery_worker_proc):
    """`--pool threads` (the GPU-node layout in docs/deploy.md) has no worker_process_init: the warm-up
    runs at worker_ready instead, before the consumer loop reads the ticket that is already queued."""
    celery_worker_proc.stop()
    purge_broker()
    try:
        ticket = routed_ticket(bank_customer, "technical", "card_not_working", "My card stopped working", operator_user)
        w = Worker(worker_env(tiny_ckpts, MOEDESK_PRELOAD=1), tmp_path / "worker.log", pool="threads",
                   concurrency=2).start()
        try:
            assert wait_status(ticket, "draft_ready", "escalated", "failed") in ("draft_ready", "escalated")
        finally:
            w.stop()
    finally:
        celery_worker_proc.start()
    lines = (tmp_path / "worker.log").read_text().splitlines()
    warm = [i for i, line in enumerate(lines) if '"msg": "models warm"' in line]
    received = [i for i, line in enumerate(lines) if "support_agents.run_agent[" in line and "received" in line]
    assert len(warm) == 1, "the thread-pool worker did not warm its models exactly once"
    assert received and warm[0] < received[0], "a task was read before the models were warm"
    assert AgentRun.objects.get(ticket=ticket).attempts == 1


@pytest.mark.skipif(not shipped(SHIPPED_ROUTER), reason="needs the shipped router checkpoint (checkpoints/router)")
def test_work_whose_messages_were_lost_is_done_when_a_worker_starts(pipeline, bank_customer, operator_user,
                                                                     tiny_ckpts, tmp_path, celery_worker_proc):
    """Messages lost while no worker ran (a broker incident, or taken by a worker that was stopped
    before acknowledging them, which Redis returns only after its visibility timeout): the next worker
    to start publishes the waiting work again, without anyone running `requeue_new`."""
    from support_agents.runner import ticket_move
    from support_agents.services.tickets import ticket_create

    celery_worker_proc.stop()
    purge_broker()
    try:
        new = ticket_create(customer=bank_customer, subject="", body="I would like to cancel a transfer I made by mistake.")
        mid_triage = ticket_create(customer=bank_customer, subject="", body="How do I activate my new card?")
        ticket_move(mid_triage, "triaging", actor="test", reason="triage started by a worker that was then stopped")
        queued = routed_ticket(bank_customer, "technical", "card_not_working", "My card stopped working", operator_user)
        purge_broker()  # every message above is gone
        w = Worker(worker_env(tiny_ckpts), tmp_path / "worker.log").start()
        try:
            for ticket, queue in ((new, "billing"), (mid_triage, "technical"), (queued, "technical")):
                assert wait_status(ticket, "draft_ready", "escalated", "needs_triage", "failed") in (
                    "draft_ready", "escalated")
                ticket.refresh_from_db()
                assert ticket.queue == queue
        finally:
            w.stop()
    finally:
        celery_worker_proc.start()
    assert AgentRun.objects.get(ticket=queued).attempts == 1


@pytest.mark.skipif(not shipped(SHIPPED_ROUTER), reason="needs the shipped router checkpoint (checkpoints/router)")
def test_requeue_new_publishes_triage_for_tickets_whose_message_was_lost(pipeline, bank_customer, celery_worker_proc):
    """Between worker restarts (a broker incident while workers keep running) the command does it."""
    from django.core.management import call_command

    body = "How do I activate my new card?"
    # Written without ticket_create, which would publish triage: as if that publish had failed.
    ticket = Ticket.objects.create(customer=bank_customer, body=body, subject=body, channel="email")
    Message.objects.create(ticket=ticket, author_kind="customer", body=body)
    out = io.StringIO()
    call_command("requeue_new", older_than=3600, stdout=out)
    assert out.getvalue().strip() == "re-enqueued 0 ticket(s)" and status_of(ticket) == "new"
    call_command("requeue_new", older_than=0, stdout=out)
    assert "re-enqueued 1 ticket(s)" in out.getvalue()
    assert wait_status(ticket, "draft_ready", "escalated", "needs_triage", "failed") in ("draft_ready", "escalated")


@pytest.mark.parametrize("via", ["celery", "runner"])
def test_time_limit_retries_visibly_then_fails_with_reason(pipeline, bank_customer, operator_user, tiny_ckpts,
                                                           tmp_path, celery_worker_proc, monkeypatch, via):
    from support_agents import tasks
    from support_agents.models import AuditEvent

    celery_worker_proc.stop()
    purge_broker()
    if via == "celery":
        # Celery puts the *publisher's* limits into each message; the worker's pool enforces them (SIGUSR1).
        monkeypatch.setattr(tasks.run_agent, "soft_time_limit", 2)
        monkeypatch.setattr(tasks.run_agent, "_exec_options", None)  # Celery memoises the options
        env = {"CELERY_TASK_SOFT_TIME_LIMIT": 25}
    else:
        # the runner's own check between steps, with the worker's setting
        env = {"CELERY_TASK_SOFT_TIME_LIMIT": 2}
    w = Worker(worker_env(tiny_ckpts, CELERY_TASK_TIME_LIMIT=30, MOEDESK_TEST_SLOW_TOOL="before:lookup_transactions",
                          MOEDESK_TEST_SLOW_SECONDS=6, **env), tmp_path / "worker.log").start()
    try:
        bank_customer.accounts.first().transactions.filter(merchant="Tesco").update(amount=Decimal("60.00"))
        ticket = routed_ticket(bank_customer, "billing", "request_refund", "Refund my Tesco payment", operator_user)
        # celery: the retry is published by the worker with its own (longer) limit, so attempt 2 finishes
        wait_status(ticket, "draft_ready" if via == "celery" else "failed", timeout=120)
    finally:
        w.stop()
        celery_worker_proc.start()
    ticket.refresh_from_db()
    went = [e.data.get("to") for e in
            AuditEvent.objects.filter(ticket=ticket, verb="ticket.status_changed").order_by("at", "id")]
    run = AgentRun.objects.get(ticket=ticket)
    log = (tmp_path / "worker.log").read_text()
    if via == "celery":
        assert "Soft time limit (2s) exceeded" in log
        assert went.count("retrying") == 1 and run.status == "completed" and run.attempts == 2
        assert Refund.objects.count() == 1
    else:
        assert "time limit" in ticket.status_reason and went.count("retrying") == 2 and went[-1] == "failed"
        assert run.status == "failed" and run.attempts == 3 and not Refund.objects.exists()
