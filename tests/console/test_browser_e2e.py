"""The whole product in a real browser: uvicorn + a Celery worker subprocess + PostgreSQL + Redis.

The agent model is the pipeline's tiny random checkpoint (its runs take the deterministic
procedure/template path). Routing is random with a tiny router, so after triage the operator
routes the refund ticket to billing from the console, as a human triager would; with the shipped
router present that decision is the router's.
"""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from support_agents.models import AgentProfile, AgentRun, Approval, Refund, RunStep, Ticket
from tests.helpers import DEMO_SECRET, webhook_headers
from tests.pipeline.conftest import Worker, make_bank_customer, purge_broker, wait_for, worker_env

from .live import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tests.pipeline.tiny import make_tiny_checkpoints

    return make_tiny_checkpoints(tmp_path_factory.mktemp("console-ckpt"))


@pytest.fixture(scope="module")
def worker(django_db_setup, tiny_models, tmp_path_factory, browser):
    purge_broker()
    w = Worker(worker_env(tiny_models), tmp_path_factory.mktemp("console-worker") / "worker.log").start()
    yield w
    w.stop()


@pytest.fixture
def seeded(transactional_db, agent_profiles):
    from support_agents.models import AgentProcedure, PriceSetting
    from support_agents.procedures.seed import procedures_seed
    from support_agents.services.bank_demo import bank_catalog_seed

    procedures_seed(AgentProfile, AgentProcedure)
    bank_catalog_seed()
    PriceSetting.objects.get_or_create(device="cpu", defaults={"price_per_hour": Decimal("0.05")})
    PriceSetting.objects.get_or_create(device="gpu", defaults={"price_per_hour": Decimal("2.00")})
    return make_bank_customer("ada.lovelace@example.com", "Ada Lovelace")


def post_ticket(base_url: str, text: str, subject: str) -> None:
    body = json.dumps({"customer": {"email": "ada.lovelace@example.com", "name": "Ada Lovelace"},
                       "subject": subject, "body": text, "channel": "email"}).encode()
    r = httpx.post(f"{base_url}/api/intake/demo/", content=body,
                   headers={"content-type": "application/json", **webhook_headers(DEMO_SECRET, body)})
    assert r.status_code in (200, 201, 202), r.text


def _status(ticket_id: int) -> str:
    return Ticket.objects.values_list("status", flat=True).get(pk=ticket_id)


def _triaged(subject: str) -> Ticket:
    ticket = wait_for(lambda: Ticket.objects.filter(subject=subject).first(), 30, what="ticket created")
    wait_for(lambda: _status(ticket.pk) not in ("new", "triaging"), 90, what="triage finished")
    wait_for(lambda: not AgentRun.objects.filter(ticket=ticket, status__in=("queued", "running")).exists(), 90,
             what="triage's run settled")
    return ticket


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


def test_operator_watches_a_refund_run_live_and_approves_it(worker, seeded, page, live_server_url, intake_source,
                                                            operator_user, password):
    _background_tickets()
    login(page, "operator", password)
    page.wait_for_function("window.__moedeskSocketOpen === true")
    page.evaluate("window.__marker = 'same-document'")

    post_ticket(live_server_url, "Please refund the 250.00 Tesco payment, I returned the goods.", "Refund Tesco")
    page.locator("tr.ticket-row", has_text="Refund Tesco").wait_for()       # appeared live
    ticket = _triaged("Refund Tesco")
    row = page.locator(f"#ticket-{ticket.pk}")
    wait_for(lambda: row.get_attribute("data-status") not in ("new", "triaging"), 30, what="row status moved live")
    assert page.evaluate("window.__marker") == "same-document"
    screenshot(page, "inbox")

    # The operator triages: the ticket is a refund request, billing's job.
    Ticket.objects.filter(pk=ticket.pk).update(intent="request_refund")
    row.click()
    page.wait_for_url(f"**/console/tickets/{ticket.pk}/")
    page.wait_for_function("window.__moedeskSocketOpen === true")
    before = AgentRun.objects.filter(ticket=ticket).order_by("-id").values_list("id", flat=True).first() or 0
    page.select_option("select[name=agent]", "billing")
    page.click("button:has-text('Reassign')")

    # Run steps, the handoff and the routing heatmap fill in without a reload. (With the tiny
    # random router, triage may already have started some agent; the reassignment supersedes it.)
    run = wait_for(lambda: AgentRun.objects.filter(ticket=ticket, agent__slug="billing", id__gt=before).first(),
                   30, what="billing run created by the reassignment")
    approval = wait_for(lambda: Approval.objects.filter(run=run).first(), 90, what="refund approval requested")
    page.locator("#handoff-path .node", has_text="billing").first.wait_for(timeout=30_000)
    try:
        page.locator(f"#approval-{approval.pk}", has_text="issue_refund").wait_for(timeout=30_000)
    except Exception:  # say where the run stood, not just that the page did not show it
        for r in AgentRun.objects.filter(ticket=ticket):
            print("RUN", r.pk, r.agent.slug, r.intent, r.status, r.error, r.attempts)
            for st in r.steps.all():
                print("   STEP", st.index, st.kind, st.name, st.status, st.error[:200])
        print("EVENTS", page.evaluate("JSON.stringify(window.__moedeskEvents.map(e => e.kind))"))
        raise
    page.locator("#routing-heatmap .main-svg").first.wait_for(timeout=30_000)
    assert page.locator(f"#run-{run.pk} .timeline li.model").count() >= 1
    assert page.locator(f"#run-{run.pk} .timeline li.tool").count() >= 1
    assert AgentRun.objects.get(pk=run.pk).status == "awaiting_approval" and not Refund.objects.exists()
    page.wait_for_timeout(1500)  # let a refresh triggered by the last event finish drawing
    screenshot(page, "workspace", full_page=True)

    # Approve with an edited amount; the worker resumes the run and the draft appears live.
    args = page.locator(f"#approval-{approval.pk} textarea[name=args]")
    edited = json.loads(args.input_value())
    edited["amount"] = "200.00"
    args.fill(json.dumps(edited))
    page.click(f"#approval-{approval.pk} button[data-shortcut=approve]")
    wait_for(lambda: AgentRun.objects.get(pk=run.pk).status in AgentRun.TERMINAL, 90, what="run resumed and finished")
    page.wait_for_function("[...document.querySelectorAll('textarea[data-draft]')].some(t => t.value.includes('200.00'))",
                           timeout=30_000)
    decided = Approval.objects.get(pk=approval.pk)
    assert decided.status == "approved", (decided.decision_note, decided.decided_by_id,
                                          list(AgentRun.objects.filter(ticket=ticket).values_list(
                                              "agent__slug", "status", "error")))
    assert list(Refund.objects.values_list("amount", flat=True)) == [Decimal("200.00")]

    # Send the draft: the ticket becomes replied, shown live in the header.
    page.locator("button:has-text('Send reply')").last.click()
    page.locator("#ticket-status[data-status=replied]").wait_for(timeout=30_000)

    # The routing view for one of this run's model calls.
    step = RunStep.objects.filter(run=run, kind="model").exclude(routing={}).first()
    page.goto(f"/console/routing/steps/{step.pk}/")
    page.locator("#token-routing .main-svg").first.wait_for()
    page.locator("#routing-heatmap .main-svg").first.wait_for()
    screenshot(page, "heatmap")

    page.goto("/console/dashboard/?range=24h")
    page.locator("#cost-fig .main-svg").first.wait_for()
    page.locator("#sankey-fig .main-svg").first.wait_for()
    assert "billing" in page.locator("#agent-costs").inner_text()
    screenshot(page, "dashboard")


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

    post_ticket(live_server_url, "Refund the 250.00 Tesco payment please.", "Refund again")
    ticket = _triaged("Refund again")
    Ticket.objects.filter(pk=ticket.pk).update(intent="request_refund")
    before = AgentRun.objects.filter(ticket=ticket).order_by("-id").values_list("id", flat=True).first() or 0
    page.goto(f"/console/tickets/{ticket.pk}/")
    page.wait_for_function("window.__moedeskSocketOpen === true")
    page.select_option("select[name=agent]", "billing")
    page.click("button:has-text('Reassign')")
    run = wait_for(lambda: AgentRun.objects.filter(ticket=ticket, agent__slug="billing", id__gt=before).first(),
                   30, what="billing run created by the reassignment")
    # 250 is under the new 300 limit: no approval this time, straight to a draft.
    wait_for(lambda: AgentRun.objects.get(pk=run.pk).status in AgentRun.TERMINAL, 90, what="run finished")
    run.refresh_from_db()
    assert run.status == "completed", (run.status, run.error)
    page.locator("textarea[data-draft]").last.wait_for(timeout=30_000)
    assert run.profile_version_id == version.pk
    assert not Approval.objects.filter(run=run).exists()
    assert page.locator(f"#run-{run.pk}", has_text=f"settings v{version.version}").count() == 1
