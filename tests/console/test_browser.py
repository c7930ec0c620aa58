"""Real browser against the real server: login, live inbox, role checks."""

import json

import httpx
import pytest

from tests.helpers import DEMO_SECRET, webhook_headers

from .live import login

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]


def post_ticket(base_url: str, text: str, subject: str, email: str = "dana.fox@example.com") -> dict:
    body = json.dumps({"customer": {"email": email, "name": "Dana Fox"}, "subject": subject, "body": text}).encode()
    r = httpx.post(f"{base_url}/api/intake/demo/", content=body,
                   headers={"content-type": "application/json", **webhook_headers(DEMO_SECRET, body)})
    assert r.status_code in (200, 201, 202), r.text
    return r.json()


def test_login_and_new_ticket_appears_live_without_reload(page, live_server_url, operator_user, intake_source,
                                                          password):
    login(page, "operator", password)
    page.wait_for_function("window.__moedeskSocketOpen === true")
    page.evaluate("window.__marker = 'no-reload'")
    assert page.locator("tr.ticket-row").count() == 0

    post_ticket(live_server_url, "My card payment was charged twice at the supermarket.", "Charged twice")
    row = page.locator("tr.ticket-row", has_text="Charged twice")
    row.wait_for()
    assert page.evaluate("window.__marker") == "no-reload"  # same document: it arrived live
    assert page.locator("#queue-counts [data-count=_total]").inner_text() == "1"
    kinds = page.evaluate("window.__moedeskEvents.map(e => e.kind)")
    assert "ticket.created" in kinds


def test_operator_is_refused_admin_pages(page, operator_user, password):
    login(page, "operator", password)
    assert page.locator("nav >> text=Administration").count() == 0
    for url in ("/console/admin/agents/", "/console/admin/intake/", "/console/admin/prices/",
                "/console/admin/agents/billing/"):
        response = page.goto(url)
        assert response.status == 403, url


def test_keyboard_shortcuts_move_and_open(page, live_server_url, operator_user, intake_source, password):
    for i in range(3):
        post_ticket(live_server_url, f"Question number {i} about my account", f"Question {i}")
    login(page, "operator", password)
    page.locator("tr.ticket-row").first.wait_for()
    page.keyboard.press("j")
    page.keyboard.press("j")
    selected = page.locator("tr.ticket-row.selected")
    assert selected.count() == 1
    href = selected.get_attribute("data-href")
    page.keyboard.press("o")
    page.wait_for_url(f"**{href}")
    page.keyboard.press("u")
    page.wait_for_url("**/console/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "id_q"


def test_live_refresh_never_clobbers_a_draft_being_edited(page, operator_user, agent_profiles, password):
    from django.db import transaction

    from support_agents.models import Message
    from support_agents.services.tickets import operator_message_post

    from .factories import ticket_with_run

    ticket, _ = ticket_with_run(status="draft_ready")
    draft = Message.objects.create(ticket=ticket, author_kind="agent", body="Dear Ada, done.", is_draft=True)
    box = f"#draft-body-{draft.pk}"
    login(page, "operator", password)
    page.goto(f"/console/tickets/{ticket.pk}/")
    page.wait_for_function("window.__moedeskSocketOpen === true")
    page.fill(box, "Dear Ada, my own careful wording")
    page.focus(box)
    with transaction.atomic():  # another operator adds a note: a live event for this ticket
        operator_message_post(ticket=ticket, user=operator_user, body="colleague's note", is_internal=True)
    page.wait_for_function("window.__moedeskEvents.some(e => e.kind === 'message.created')")
    page.wait_for_timeout(300)
    assert page.input_value(box) == "Dear Ada, my own careful wording"
    assert page.locator("#panel-conversation", has_text="colleague's note").count() == 0
    page.focus("#note-body")  # leaving the field lets the deferred refresh run...
    page.locator("#panel-conversation", has_text="colleague's note").wait_for()
    assert page.input_value(box) == "Dear Ada, my own careful wording"  # ...and the edit survives it
