"""The whole product in a real browser, on the real pipeline: uvicorn + a Celery worker subprocess
(prefork) + PostgreSQL + Redis, with the shipped models — `checkpoints/router` triages every ticket
that arrives through the signed intake webhook and the agents run on `checkpoints/agent`.

Nobody routes by hand here. The texts were chosen so the shipped router sends them where the story
needs them (checked with `support_agents.router.classify_texts`):
- "My card payment got declined ... but the money was taken" -> declined_card_payment -> technical,
  whose procedure finds the card active and no incident, and hands the ticket to billing
  (pending_card_payment) with a context summary;
- "I want a refund for my 250.00 Tesco payment ..." -> request_refund -> billing, whose refund over
  the agent's 100.00 limit waits for an operator's approval.

To *watch* a run fill in, the operator must have the ticket open before triage starts, and the
pipeline needs well under a second per ticket. So the test pauses the worker's `triage` queue
(Celery's remote control: `cancel_consumer`, as an operator pausing intake would) while the ticket
arrives and the workspace opens, then resumes it; everything after that is the worker's own doing.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal

import httpx
import pytest

from support_agents.models import AgentProfile, AgentRun, Approval, Handoff, Message, Refund, RunStep, Ticket
from tests.helpers import DEMO_SECRET, webhook_headers
from tests.pipeline.conftest import (
    SHIPPED_AGENT,
    SHIPPED_ROUTER,
    Worker,
    make_bank_customer,
    purge_broker,
    shipped,
    wait_for,
)

from .live import login, screenshot

pytestmark = [
    pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300),
    pytest.mark.skipif(not (shipped(SHIPPED_ROUTER) and shipped(SHIPPED_AGENT)),
                       reason="needs the shipped checkpoints/router and checkpoints/agent"),
]

CUSTOMER = {"email": "ada.lovelace@example.com", "name": "Ada Lovelace"}
HANDOFF_SUBJECT = "Payment declined"
HANDOFF_TEXT = "My card payment got declined when I tried to pay at the store, but the money was taken"
REFUND_SUBJECT = "Refund for returned goods"
REFUND_TEXT = "I want a refund for my 250.00 Tesco payment, I returned the goods."
# Every live region has finished re-fetching (console.js marks a region _busy/_dirty while it does).
SETTLED = "[...document.querySelectorAll('[data-live]')].every(e => !e._busy && !e._dirty)"


def shipped_worker_env() -> dict:
    from django.conf import settings

    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "1"),
           "MOEDESK_ROUTER_PATH": str(SHIPPED_ROUTER), "MOEDESK_AGENT_PATH": str(SHIPPED_AGENT),
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.setdefault("DJANGO_SECRET_KEY", "console-tests-only")
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory, browser):
    purge_broker()
    w = Worker(shipped_worker_env(), tmp_path_factory.mktemp("console-worker") / "worker.log", concurrency=2).start()
    yield w
    w.stop()


def _control(action: str, queue: str) -> None:
    """Pause/resume a queue on the test's worker and insist that it answered."""
    from webapp.celery import app

    reply = getattr(app.control, action)(queue, reply=True, timeout=10)
    assert reply, f"no worker answered {action}({queue})"


@pytest.fixture
def triage_paused(worker):
    """A context in which the worker takes no triage work; resumed by `resume()` or at teardown."""
    state = {"paused": True}
    _control("cancel_consumer", "triage")

    def resume() -> None:
        if state["paused"]:
            _control("add_consumer", "triage")
            state["paused"] = False

    yield resume
    resume()


@pytest.fixture
def seeded(transactional_db, agent_profiles):
    from support_agents.models import AgentProcedure, PriceSetting
    from support_agents.procedures.seed import procedures_seed
    from support_agents.services.bank_demo import bank_catalog_seed

    procedures_seed(AgentProfile, AgentProcedure)
    bank_catalog_seed()
    PriceSetting.objects.get_or_create(device="cpu", defaults={"price_per_hour": Decimal("0.05")})
    PriceSetting.objects.get_or_create(device="gpu", defaults={"price_per_hour": Decimal("2.00")})
    return make_bank_customer(CUSTOMER["email"], CUSTOMER["name"])


def post_ticket(base_url: str, subject: str, text: str) -> str:
    """Through the signed intake webhook, as a shop's helpdesk form would; returns the reference."""
    body = json.dumps({"customer": CUSTOMER, "subject": subject, "body": text, "channel": "email"}).encode()
    r = httpx.post(f"{base_url}/api/intake/demo/", content=body,
                   headers={"content-type": "application/json", **webhook_headers(DEMO_SECRET, body)})
    assert r.status_code == 202, r.text
    return r.json()["ticket"]


def ticket_of(reference: str) -> Ticket:
    return Ticket.objects.get(pk=Ticket.id_from_reference(reference))


def where_it_stands(ticket: Ticket) -> str:
    """For failure messages: the ticket, its runs and their steps."""
    ticket.refresh_from_db()
    lines = [f"{ticket.reference} {ticket.status} queue={ticket.queue} intent={ticket.intent} "
             f"conf={ticket.confidence} reason={ticket.status_reason!r}"]
    for r in AgentRun.objects.filter(ticket=ticket).select_related("agent").order_by("id"):
        lines.append(f"  run {r.pk} {r.agent.slug} {r.intent} {r.status} {r.error!r}")
        lines += [f"    {s.index} {s.kind} {s.name} {s.status} {s.error[:120]!r}" for s in r.steps.order_by("index")]
    return "\n".join(lines)


def test_operator_watches_triage_handoff_and_heatmap_live_then_approves_a_refund(
        worker, triage_paused, seeded, page, live_server_url, intake_source, operator_user, password):
    _background_tickets()
    login(page, "operator", password)
    page.wait_for_function("window.__moedeskSocketOpen === true")
    page.evaluate("window.__marker = 'same-document'")

    # 1. Two customer emails arrive through the webhook and appear in the inbox without a reload.
    refund_ref = post_ticket(live_server_url, REFUND_SUBJECT, REFUND_TEXT)
    handoff_ref = post_ticket(live_server_url, HANDOFF_SUBJECT, HANDOFF_TEXT)
    refund, handoff = ticket_of(refund_ref), ticket_of(handoff_ref)
    page.locator(f"#ticket-{refund.pk}[data-status=new]", has_text=REFUND_SUBJECT).wait_for()
    page.locator(f"#ticket-{handoff.pk}[data-status=new]", has_text=HANDOFF_SUBJECT).wait_for()
    assert page.evaluate("window.__marker") == "same-document"

    # 2. Open the declined-payment ticket before anything has happened to it...
    page.locator(f"#ticket-{handoff.pk}").click()
    page.wait_for_url(f"**/console/tickets/{handoff.pk}/")
    page.wait_for_function("window.__moedeskSocketOpen === true")
    assert page.locator("#live.on").is_visible()
    page.evaluate("window.__marker = 'workspace'")
    assert page.locator("#panel-activity", has_text="Not routed yet.").count() == 1
    assert page.locator("#routing-heatmap").count() == 0

    # 3. ...then let triage run and watch the router, the technical agent, its handoff to billing,
    # billing's run and the routing heatmap arrive over the websocket.
    triage_paused()
    try:
        page.locator("#handoff-path .node").nth(2).wait_for(timeout=60_000)
        page.locator("#ticket-status[data-status=draft_ready]").wait_for(timeout=60_000)
    except Exception:
        raise AssertionError(where_it_stands(handoff)) from None
    assert page.locator("#handoff-path .node").all_inner_texts() == ["router", "technical", "billing"]
    technical = AgentRun.objects.get(ticket=handoff, agent__slug="technical")
    billing = AgentRun.objects.get(ticket=handoff, agent__slug="billing")
    assert technical.status == "handed_off" and billing.status == "completed", where_it_stands(handoff)
    h = Handoff.objects.get(ticket=handoff, from_label="technical")
    assert h.to_label == "billing" and billing.context == h.context_summary
    tech_run = page.locator(f"#run-{technical.pk}")
    assert tech_run.locator(".timeline li.model", has_text="classify").count() == 1       # the router's call
    assert tech_run.locator(".timeline li.tool", has_text="card_status").count() == 1
    assert tech_run.locator(".timeline li.handoff", has_text="handoff:billing").count() == 1
    assert page.locator(f"#run-{billing.pk} .timeline li.reply").count() == 1
    page.locator(".timeline li.handoff", has_text="technical → billing").wait_for()
    page.locator("#routing-heatmap.js-plotly-plot .main-svg").first.wait_for()
    page.locator("textarea[data-draft]").first.wait_for()
    kinds = set(page.evaluate("window.__moedeskEvents.map(e => e.kind)"))
    assert {"run.step", "handoff", "message.created"} <= kinds, kinds
    assert page.evaluate("window.__marker") == "workspace"  # all of it arrived live
    page.wait_for_function(SETTLED)
    screenshot(page, "workspace", full_page=True)

    # 4. Meanwhile the refund went to billing and waits for a human: the inbox shows it.
    wait_for(lambda: ticket_of(refund_ref).status == "awaiting_approval", 60,
             what=f"refund awaiting approval\n{where_it_stands(refund)}")
    page.keyboard.press("u")
    page.wait_for_url("**/console/")
    page.locator(f"#ticket-{refund.pk}[data-status=awaiting_approval]").wait_for()
    page.locator(f"#ticket-{handoff.pk}[data-status=draft_ready]").wait_for()
    assert page.locator("#queue-counts [data-count=_approval]").inner_text() == "2"  # with a background one
    page.wait_for_function(SETTLED)
    screenshot(page, "inbox")

    # 5. Approve the refund with an edited amount; the worker resumes the run and its draft appears.
    page.locator(f"#ticket-{refund.pk}").click()
    page.wait_for_url(f"**/console/tickets/{refund.pk}/")
    page.wait_for_function("window.__moedeskSocketOpen === true")
    approval = Approval.objects.get(ticket=refund, status="pending")
    assert approval.tool == "issue_refund" and Decimal(approval.args["amount"]) == Decimal("250.00")
    assert not Refund.objects.exists()
    args = page.locator(f"#approval-{approval.pk} textarea[name=args]")
    edited = json.loads(args.input_value())
    edited["amount"] = "200.00"
    args.fill(json.dumps(edited))
    page.click(f"#approval-{approval.pk} button[data-shortcut=approve]")
    page.locator("#ticket-status[data-status=draft_ready]").wait_for(timeout=60_000)
    page.locator("textarea[data-draft]").first.wait_for()
    assert Approval.objects.get(pk=approval.pk).status == "approved"
    assert list(Refund.objects.values_list("amount", flat=True)) == [Decimal("200.00")]
    draft = Message.objects.get(ticket=refund, author_kind="agent", is_draft=True)
    assert draft.data["facts"]["refund_amount"].startswith("200.00"), draft.data
    assert page.locator(f"#approval-{approval.pk}").count() == 0  # no longer pending, live

    # 6. Send the draft: the ticket becomes replied, shown live in the header.
    page.locator("button:has-text('Send reply')").last.click()
    page.locator("#ticket-status[data-status=replied]").wait_for()

    # 7. The routing view of the technical agent's argument-extraction call (prompt + generated tokens).
    step = RunStep.objects.get(run=technical, kind="model", name="extract_arguments")
    page.goto(f"/console/routing/steps/{step.pk}/")
    page.locator("#token-routing .main-svg").first.wait_for()
    page.locator("#routing-heatmap .main-svg").first.wait_for()
    assert page.locator("#live").is_hidden()  # a page without live updates shows no live badge
    screenshot(page, "heatmap")

    page.goto("/console/dashboard/?range=24h")
    page.locator("#cost-fig .main-svg").first.wait_for()
    page.locator("#sankey-fig .main-svg").first.wait_for()
    costs = page.locator("#agent-costs").inner_text()
    assert "billing" in costs and "technical" in costs
    screenshot(page, "dashboard", full_page=True)


def test_admin_changes_a_setting_and_the_next_run_uses_it(worker, seeded, page, live_server_url, intake_source,
                                                          admin_user, password):
    login(page, "admin", password)
    page.goto("/console/admin/agents/billing/")
    page.fill("#id_refund_approval_limit", "5000000")  # over the service's 1,000,000 cap
    page.click("button:has-text('Save (creates a new version)')")
    page.locator("[data-field=refund_approval_limit]").wait_for()          # field-level message, no save
    assert AgentProfile.objects.get(slug="billing").refund_approval_limit == Decimal("100.00")
    page.fill("#id_refund_approval_limit", "300.00")
    page.click("button:has-text('Save (creates a new version)')")
    page.locator(".flash", has_text="next run uses the new settings").wait_for()
    billing = AgentProfile.objects.get(slug="billing")
    assert billing.refund_approval_limit == Decimal("300.00")
    version = billing.versions.order_by("-version").first()

    # The same kind of refund as before, now under the limit: routed by the router, refunded
    # without an approval, straight to a draft, and the run names the settings version it used.
    page.goto("/console/")
    page.wait_for_function("window.__moedeskSocketOpen === true")
    ref = post_ticket(live_server_url, "Another refund", "Can I get a refund for my 250.00 Tesco payment? "
                                                         "I sent the item back.")
    ticket = ticket_of(ref)
    row = page.locator(f"#ticket-{ticket.pk}")
    try:
        page.locator(f"#ticket-{ticket.pk}[data-status=draft_ready]").wait_for(timeout=60_000)
    except Exception:
        raise AssertionError(where_it_stands(ticket)) from None
    row.click()
    page.wait_for_url(f"**/console/tickets/{ticket.pk}/")
    run = AgentRun.objects.get(ticket=ticket)
    assert run.agent.slug == "billing" and run.status == "completed", where_it_stands(ticket)
    assert run.profile_version_id == version.pk
    assert not Approval.objects.filter(run=run).exists()
    assert list(Refund.objects.values_list("amount", flat=True)) == [Decimal("250.00")]
    page.locator(f"#run-{run.pk}", has_text=f"settings v{version.version}").wait_for()
    page.locator("textarea[data-draft]").first.wait_for()


def _background_tickets() -> None:
    """Other work in the inbox, so the screenshot shows a realistic queue."""
    from support_agents.models import Customer

    rows = [("Card declined abroad", "technical", "card_not_working", "in_progress", "high"),
            ("Top-up still pending", "billing", "pending_top_up", "draft_ready", "normal"),
            ("Which currencies can I hold?", "sales", "supported_cards_and_currencies", "replied", "low"),
            ("Lost my card on the train", "technical", "lost_or_stolen_card", "escalated", "urgent"),
            ("Charged a fee for transfer", "billing", "transfer_fee_charged", "awaiting_approval", "normal"),
            ("hello??", "", "", "needs_triage", "normal")]
    for i, (subject, queue, intent, status, priority) in enumerate(rows):
        customer = Customer.objects.create(email=f"customer{i}@example.org", name=f"Customer {i}")
        Ticket.objects.create(subject=subject, body=subject, customer=customer, queue=queue, intent=intent,
                              status=status, priority=priority, confidence=0.8 if queue else 0.3)
