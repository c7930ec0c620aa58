"""Tools (schemas, scoping, idempotency), procedures validation, operator/admin services, classify."""
from __future__ import annotations

import csv
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from support_agents.models import (
    AgentProfileVersion,
    AgentRun,
    AuditEvent,
    Message,
    Refund,
    Ticket,
    TicketStatus,
    ToolInvocation,
)
from support_agents.procedures import check, load_definitions, render_facts, resolve, validate_definition
from support_agents.runner import execute_run, recover_orphaned_runs, run_create
from support_agents.tools import REGISTRY, invoke_tool
from tests.pipeline.test_runs_inprocess import start


def call(run, step, name, args):
    return invoke_tool(run=run, ticket=run.ticket, step_index=step, name=name, args=args, actor="test")


@pytest.fixture
def billing_run(pipeline, bank_customer):
    from support_agents.services.tickets import ticket_create

    ticket = ticket_create(customer=bank_customer, subject="", body="help", channel="email")
    return run_create(ticket=ticket, agent=pipeline["billing"], intent="request_refund")


def test_shipped_procedures_cover_every_intent_and_validate(pipeline):
    import json

    from support_agents.language import FIELDS
    from support_agents.router import intent_queues

    defs = load_definitions()
    owned = {p["intent"]: agent for agent, ps in defs.items() for p in ps}
    assert owned == intent_queues()
    allowed = {slug: set(p.tools) for slug, p in pipeline.items()}
    for agent, ps in defs.items():
        for p in ps:
            assert validate_definition(p, tools=set(REGISTRY), fields=set(FIELDS), agents=set(defs)) == []
            for st in p["steps"]:
                if "tool" in st:  # a shipped procedure never relies on a tool its agent does not own
                    assert st["tool"] in allowed[agent], (agent, p["intent"], st["tool"])
    assert json.dumps(defs)  # plain data


def test_procedure_validation_messages():
    errs = validate_definition({"intent": "x", "steps": [{"id": "a", "tool": "nope", "on_error": "explode"},
                                                         {"id": "a", "escalate": "r", "when": {"path": "$x"}}],
                                "extract": ["shoe_size"], "facts": {"k": 1}},
                               tools=set(REGISTRY), fields={"amount"}, agents={"billing"})
    text = " | ".join(errs)
    for needle in ("unknown tool 'nope'", "on_error", "duplicate 'a'", "needs exactly one of eq", "shoe_size",
                   "facts: must map"):
        assert needle in text


def test_expressions():
    scope = {"args": {"amount": None}, "results": {"txn": {"amount_value": "12.50", "count": 2}},
             "ticket": {"body": "The money was TAKEN"}}
    assert resolve("$args.amount|$results.txn.amount_value", scope) == "12.50"
    assert resolve("$args.country|GB", scope) == "GB"
    assert check({"path": "$results.txn.count", "gte": 2}, scope)
    assert check({"all": [{"path": "$ticket.body", "contains_any": ["taken"]}, {"not": {"path": "$args.amount",
                                                                                       "present": True}}]}, scope)
    assert not check({"any": [{"path": "$results.txn.count", "lte": 1}, {"path": "$missing", "eq": 1}]}, scope)


def test_reply_facts_write_status_names_as_words():
    scope = {"results": {"card": {"card_status": "not_activated", "reference": "TX_0001"}},
             "errors": {"refund": "account is already pending_closure"}}
    facts = {"card_status": "$results.card.card_status", "reference": "$results.card.reference",
             "refund_decision": "$errors.refund", "missing": "$results.none"}
    assert render_facts(facts, scope) == {"card_status": "not activated", "reference": "TX_0001",
                                          "refund_decision": "account is already pending closure"}


def test_tool_schema_errors_are_field_level(billing_run):
    out = call(billing_run, 0, "issue_refund", {"transaction_reference": "X", "amount": "-5", "customer_id": 7})
    assert out.status == "invalid"
    assert "amount:" in out.error and "customer_id: Extra inputs are not permitted" in out.error
    assert not Refund.objects.exists()


def test_tools_only_see_the_tickets_customer(billing_run, other_customer):
    theirs = other_customer.accounts.first().transactions.first()
    out = call(billing_run, 0, "lookup_transactions", {"reference": theirs.reference})
    assert out.ok and out.result["found"] is False
    out = call(billing_run, 1, "issue_refund", {"transaction_reference": theirs.reference, "amount": "1.00"})
    assert out.status == "error" and "not found for this customer" in out.error
    assert not Refund.objects.exists()


def test_refund_is_idempotent_per_step_and_capped(billing_run, bank_customer):
    ref = bank_customer.accounts.first().transactions.get(merchant="Tesco").reference
    a = call(billing_run, 3, "issue_refund", {"transaction_reference": ref, "amount": "50.00"})
    b = call(billing_run, 3, "issue_refund", {"transaction_reference": ref, "amount": "50.00"})
    assert a.ok and b.ok and b.replayed and a.result == b.result
    assert Refund.objects.count() == 1 and ToolInvocation.objects.filter(tool="issue_refund").count() == 1
    assert call(billing_run, 4, "issue_refund", {"transaction_reference": ref, "amount": "99.00"}).ok
    # 250 - 149 already refunded: refused outright, before any approval is asked for
    too_much = call(billing_run, 5, "issue_refund", {"transaction_reference": ref, "amount": "150.00"})
    assert too_much.status == "error" and "exceeds the refundable 101.00" in too_much.error
    assert Refund.objects.count() == 2 and not billing_run.approvals.exists()


def test_profile_update_validates_versions_and_audits(pipeline, admin_user):
    from support_agents.services.agents import agent_profile_update

    billing = pipeline["billing"]
    with pytest.raises(ValidationError) as e:
        agent_profile_update(billing, admin_user, tools=["issue_refund", "launch_rockets"], max_steps=0,
                             confidence_threshold=1.5, refund_approval_limit="-1", auto_send="sometimes",
                             generation={"max_new_tokens": 10, "bogus": 1}, colour="red")
    fields = e.value.message_dict
    for f in ("tools", "max_steps", "confidence_threshold", "refund_approval_limit", "auto_send", "generation",
              "colour"):
        assert f in fields, f
    for bad in (5, -1, True, "1"):
        with pytest.raises(ValidationError, match="reply_retries"):
            agent_profile_update(billing, admin_user, generation={"reply_retries": bad})
    v1 = agent_profile_update(billing, admin_user, refund_approval_limit="500.00")
    v2 = agent_profile_update(billing, admin_user, confidence_threshold=0.7)
    assert (v1.version, v2.version) == (1, 2) and v2.changes == {"confidence_threshold": {"from": 0.5, "to": 0.7}}
    billing.refresh_from_db()
    assert billing.refund_approval_limit == Decimal("500.00")
    assert AuditEvent.objects.filter(verb="agent.updated").count() == 2
    run = run_create(ticket=_ticket(billing), agent=billing, intent="request_refund")
    assert run.profile_version == AgentProfileVersion.objects.get(profile=billing, version=2)


def _ticket(agent):
    from support_agents.models import Customer
    from support_agents.services.tickets import ticket_create

    c, _ = Customer.objects.get_or_create(email="x@example.com")
    return ticket_create(customer=c, subject="", body="hello", channel="web")


def test_reply_send_escalate_reassign_resolve(model_env, pipeline, bank_customer, operator_user):
    from support_agents.services.agents import reply_send, ticket_escalate, ticket_reassign, ticket_resolve

    ticket, run = start(bank_customer, pipeline["sales"], "country_support", "Do you support Spain?")
    assert execute_run(run.pk) == "completed"
    draft = Message.objects.get(ticket=ticket, author_kind="agent", is_draft=True)
    with pytest.raises(ValidationError):
        reply_send(draft, operator_user, edited_body="   ")
    sent = reply_send(draft, operator_user, edited_body="Yes, we support Spain.")
    assert not sent.is_draft and sent.data["original_body"] and sent.body == "Yes, we support Spain."
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.REPLIED
    with pytest.raises(ValidationError):
        reply_send(sent, operator_user)
    with pytest.raises(ValidationError):
        ticket_escalate(ticket, operator_user, "")
    ticket_escalate(ticket, operator_user, "customer asked for a person")
    assert ticket.status == TicketStatus.ESCALATED
    new_run = ticket_reassign(ticket, "billing", operator_user)
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.QUEUED and ticket.queue == "billing" and new_run.intent == "_default"
    ticket_resolve(ticket, operator_user)
    assert ticket.status == TicketStatus.RESOLVED
    assert AgentRun.objects.get(pk=new_run.pk).status == "escalated"  # stopped, not left queued
    with pytest.raises(ValidationError):
        ticket_reassign(ticket, "astrology", operator_user)


def test_model_error_retries_visibly_then_fails(model_env, pipeline, bank_customer, tmp_path, monkeypatch):
    from support_agents.runner import MAX_DELIVERIES, run_attempt_failed

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    pipeline["billing"].model_path = str(broken)
    pipeline["billing"].save()
    ticket, run = start(bank_customer, pipeline["billing"], "request_refund", "refund please")
    for attempt in range(1, MAX_DELIVERIES + 1):
        with pytest.raises(Exception, match="config|architecture|Checkpoint"):
            execute_run(run.pk)
        again = run_attempt_failed(run.pk, "CheckpointError: broken", final=False)
        ticket.refresh_from_db()
        if attempt < MAX_DELIVERIES:
            assert again and ticket.status == TicketStatus.RETRYING
        else:
            assert not again and ticket.status == TicketStatus.FAILED and "broken" in ticket.status_reason
    assert AgentRun.objects.get(pk=run.pk).status == "failed"


def test_delivery_cap_fails_a_run_that_keeps_crashing(model_env, pipeline, bank_customer):
    from support_agents.runner import MAX_DELIVERIES

    ticket, run = start(bank_customer, pipeline["billing"], "request_refund", "refund please")
    AgentRun.objects.filter(pk=run.pk).update(attempts=MAX_DELIVERIES, status="running")
    assert execute_run(run.pk) == "failed"
    ticket.refresh_from_db()
    assert ticket.status == TicketStatus.FAILED and "deliveries" in ticket.status_reason


def test_run_left_running_by_a_stopped_worker_is_resumed_visibly(model_env, pipeline, bank_customer):
    """What a worker does at start (tasks.resume_interrupted_work): a run left `running` with nobody
    executing it is a failed delivery (retried visibly), and one a live worker holds is left alone."""
    from django.db import connection

    from support_agents.runner import ticket_move

    ticket, run = start(bank_customer, pipeline["billing"], "request_refund", "refund please")
    ticket_move(ticket, TicketStatus.IN_PROGRESS, actor="test", reason="run started")
    AgentRun.objects.filter(pk=run.pk).update(status="running", attempts=1)
    queue = pipeline["billing"].queue or "billing"
    executing = connection.get_new_connection(connection.get_connection_params())  # a live worker's session
    try:
        executing.execute("SELECT pg_advisory_lock(7301, %s)", [run.pk])
        assert recover_orphaned_runs([queue]) == []
    finally:
        executing.close()
    assert recover_orphaned_runs(["sales"]) == []  # not this worker's queue
    assert recover_orphaned_runs([queue]) == [run.pk]
    run.refresh_from_db()
    ticket.refresh_from_db()
    assert run.status == "queued" and "worker stopped" in run.error
    assert ticket.status == TicketStatus.RETRYING and "worker stopped" in ticket.status_reason
    assert recover_orphaned_runs([queue]) == []  # once: it is queued now, not running


def test_work_a_starting_worker_publishes_again(model_env, pipeline, bank_customer):
    """What else a worker publishes again at start (tasks.resume_interrupted_work), since a stopped
    worker's unacknowledged messages come back only after Redis's visibility timeout: tickets waiting
    for triage (`new`, or `triaging` when its worker stopped mid-triage) and runs queued on its queues."""
    from datetime import timedelta

    from django.utils import timezone

    from support_agents.runner import queued_runs, ticket_move
    from support_agents.selectors.tickets import tickets_awaiting_triage
    from support_agents.services.tickets import ticket_create

    waiting = ticket_create(customer=bank_customer, subject="", body="my transfer is pending", channel="email")
    mid_triage = ticket_create(customer=bank_customer, subject="", body="card declined", channel="email")
    ticket_move(mid_triage, TicketStatus.TRIAGING, actor="test", reason="triage started")
    routed, run = start(bank_customer, pipeline["billing"], "request_refund", "refund please")
    fresh = ticket_create(customer=bank_customer, subject="", body="which countries?", channel="email")
    Ticket.objects.filter(pk__in=[waiting.pk, mid_triage.pk, routed.pk]).update(
        updated_at=timezone.now() - timedelta(seconds=120))
    assert tickets_awaiting_triage() == [waiting.pk, mid_triage.pk, fresh.pk]
    assert tickets_awaiting_triage(older_than_s=60) == [waiting.pk, mid_triage.pk]  # what requeue_new's default sees

    queue = pipeline["billing"].queue or "billing"
    assert queued_runs([queue]) == [run.pk]
    assert queued_runs(["sales"]) == []  # not this worker's queue
    AgentRun.objects.filter(pk=run.pk).update(status="running")
    assert queued_runs([queue]) == []  # a running one is recover_orphaned_runs's, under its lock


def test_classify_command(model_env, tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i, t in enumerate(["my card is lost", "what is the weather", "refund please", ""]):
            w.writerow([i, t])
    call_command("classify", "--input", str(src), "--output", str(dst), "--batch-size", "3")
    with open(dst) as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    for r in rows:
        assert r["queue"] in {"billing", "technical", "sales", "human"}
        assert 0.0 <= float(r["confidence"]) <= 1.0 and r["intent"]
    (tmp_path / "bad.csv").write_text("body\nx\n")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no `text` column"):
        call_command("classify", "--input", str(tmp_path / "bad.csv"), "--output", str(dst))
    with pytest.raises(CommandError, match="--processes must be at least 1"):
        call_command("classify", "--input", str(src), "--output", str(dst), "--processes", "0")


def test_classify_command_in_forked_processes_writes_what_one_process_writes(model_env, tmp_path):
    src = tmp_path / "in.csv"
    texts = ["my card is lost", "what is the weather", "refund please", "I was charged twice at Tesco",
             "how do I change my PIN", "can I get a virtual card", "my transfer has not arrived yet",
             "why was I charged a fee for cash", "top up failed", "the app will not let me verify my id",
             "do you support apple pay", "what exchange rate do you use", "cancel my transfer", "hi"]
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(enumerate(texts))
    out = {}
    for n in (1, 2):
        dst = tmp_path / f"out{n}.csv"
        call_command("classify", "--input", str(src), "--output", str(dst), "--batch-size", "3", "--processes", str(n))
        out[n] = dst.read_text()
    assert out[1] == out[2] and out[1].count("\n") == len(texts) + 1


def test_procedure_admin_validates_definitions(pipeline, admin_user, client, password):
    import json

    from support_agents.models import AgentProcedure

    client.login(username=admin_user.username, password=password)
    proc = AgentProcedure.objects.get(agent=pipeline["billing"], intent="request_refund")
    url = f"/admin/support_agents/agentprocedure/{proc.pk}/change/"
    assert client.get(url).status_code == 200
    bad = {**proc.definition, "steps": [{"id": "x", "tool": "launch_rockets"}]}
    r = client.post(url, {"agent": proc.agent_id, "intent": proc.intent, "enabled": "on",
                          "definition": json.dumps(bad)})
    assert r.status_code == 200 and b"unknown tool" in r.content
    good = {**proc.definition, "summary": "edited"}
    r = client.post(url, {"agent": proc.agent_id, "intent": proc.intent, "enabled": "on",
                          "definition": json.dumps(good)})
    assert r.status_code == 302
    proc.refresh_from_db()
    assert proc.version == 2 and proc.definition["summary"] == "edited"
    assert client.get("/admin/support_agents/agentrun/").status_code == 200


def test_each_queue_has_its_own_routing_key():
    # a worker started with `-Q billing` must receive billing runs only
    from webapp.celery import QUEUES, app

    keys = {q: (app.amqp.queues[q].exchange.name, app.amqp.queues[q].routing_key) for q in QUEUES}
    assert len(set(keys.values())) == len(QUEUES) and keys["billing"][1] == "billing"


def test_profile_saved_outside_the_service_is_versioned_too(pipeline, admin_user):
    from support_agents.services.agents import agent_profile_update

    sales = pipeline["sales"]
    agent_profile_update(sales, admin_user, max_steps=5)
    sales.system_prompt = "Be brief."
    sales.save()  # e.g. Django admin
    latest = AgentProfileVersion.objects.filter(profile=sales).order_by("-version").first()
    assert latest.version == 2 and latest.changed_by == "system:save"
    assert latest.changes["system_prompt"]["to"] == "Be brief."
    sales.save()  # nothing changed: no new version
    assert AgentProfileVersion.objects.filter(profile=sales).count() == 2
