"""Ticket workspace: what it shows and every action, through the pipeline's services."""

import json

import pytest

from support_agents.models import AgentRun, Approval, AuditEvent, Handoff, Message, Ticket

from .factories import model_step, pending_refund, ticket_with_run, tool_step

pytestmark = pytest.mark.django_db


@pytest.fixture
def op(client, operator_user, agent_profiles):
    client.force_login(operator_user)
    return client


def _plot(html: str, element_id: str) -> dict:
    marker = f'data-plot="{element_id}">'
    start = html.index(marker) + len(marker)
    return json.loads(html[start:html.index("</script>", start)])


def test_workspace_shows_conversation_timeline_handoffs_approvals_and_heatmap(op):
    ticket, run = ticket_with_run()
    Message.objects.create(ticket=ticket, author_kind="operator", author_name="Olga", body="checking the card",
                           is_internal=True)
    Message.objects.create(ticket=ticket, author_kind="agent", author_name="billing", body="Hi Ada, we refunded…",
                           is_draft=True)
    model_step(run, 0)
    tool_step(run, 1, args={"merchant": "Tesco"}, result={"transactions": ["TT00001000"]})
    tool_step(run, 2, name="close_account", status="refused", error="tool close_account is not allowed for billing")
    approval = pending_refund(ticket, run)
    Handoff.objects.create(ticket=ticket, from_label="billing", to_label="technical", reason="card is blocked",
                           context_summary={"facts": {"card": "frozen"}})

    r = op.get(f"/console/tickets/{ticket.pk}/")
    assert r.status_code == 200
    html = r.content.decode()
    assert ticket.reference in html and "Charged twice" in html
    assert "internal note" in html and "checking the card" in html
    assert "data-draft" in html and "Hi Ada, we refunded…" in html
    assert "lookup_transactions" in html and "TT00001000" in html           # tool args + result
    assert "is not allowed for billing" in html and "refused" in html       # guardrail refusal
    assert 'id="handoff-path"' in html
    path = r.context["activity"]["path"]
    assert path == ["router", "billing", "technical"]
    assert "card is blocked" in html and "frozen" in html                   # reason + context summary
    assert f'id="approval-{approval.pk}"' in html and "over the agent&#x27;s limit" in html
    fig = _plot(html, "routing-heatmap")
    assert fig["data"][0]["type"] == "heatmap"
    assert fig["data"][0]["z"] == [[2, 2, 2, 2], [2, 2, 2, 2]]  # 4 tokens x top-2, spread evenly
    assert f'data-ws="/ws/console/tickets/{ticket.pk}/"' in html


def test_panels_render_alone_and_unknown_panel_404(op):
    ticket, run = ticket_with_run()
    for panel in ("head", "conversation", "activity"):
        assert op.get(f"/console/tickets/{ticket.pk}/panel/{panel}/").status_code == 200
    assert op.get(f"/console/tickets/{ticket.pk}/panel/secrets/").status_code == 404
    assert op.get("/console/tickets/999999/").status_code == 404


def test_internal_note_and_validation(op):
    ticket, _ = ticket_with_run()
    r = op.post(f"/console/tickets/{ticket.pk}/note/", {"body": ""}, HTTP_HX_REQUEST="true")
    assert r.status_code == 400 and "body" in r.content.decode() and "required" in r.content.decode()
    r = op.post(f"/console/tickets/{ticket.pk}/note/", {"body": "customer called"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and r["HX-Trigger"] == "moedesk-refresh"
    note = Message.objects.get(ticket=ticket, body="customer called")
    assert note.is_internal and note.author_kind == "operator"


def test_approve_with_edited_args_then_second_decision_is_a_conflict(op):
    ticket, run = ticket_with_run()
    approval = pending_refund(ticket, run)
    url = f"/console/approvals/{approval.pk}/approve/"
    r = op.post(url, {"args": "{not json"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 400 and "not valid JSON" in r.content.decode()
    r = op.post(url, {"args": json.dumps({"transaction_reference": "TT00001000", "amount": "-5"})},
                HTTP_HX_REQUEST="true")
    assert r.status_code == 400 and "args" in r.content.decode()
    edited = {"transaction_reference": "TT00001000", "amount": "90.00", "reason": "duplicate charge"}
    r = op.post(url, {"args": json.dumps(edited)}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200, r.content
    approval.refresh_from_db()
    ticket.refresh_from_db()
    assert approval.status == "approved" and approval.edited_args["amount"] == "90.00"
    assert ticket.status == "in_progress"
    assert AgentRun.objects.get(pk=run.pk).status == "queued"  # resumes in a new task
    assert AuditEvent.objects.filter(verb="approval.approved", ticket=ticket).exists()
    r = op.post(f"/console/approvals/{approval.pk}/reject/", HTTP_HX_REQUEST="true")
    assert r.status_code == 409 and "already approved" in r.content.decode()
    assert op.post(f"/console/approvals/{approval.pk}/maybe/").status_code == 404


def test_reject_records_note(op):
    ticket, run = ticket_with_run()
    approval = pending_refund(ticket, run)
    r = op.post(f"/console/approvals/{approval.pk}/reject/", {"note": "not our charge"})
    assert r.status_code == 302
    approval.refresh_from_db()
    assert approval.status == "rejected" and approval.decision_note == "not our charge"


def test_send_edited_draft(op):
    ticket, _ = ticket_with_run(status="draft_ready")
    draft = Message.objects.create(ticket=ticket, author_kind="agent", body="Dear Ada, refund done.", is_draft=True)
    url = f"/console/tickets/{ticket.pk}/draft/{draft.pk}/send/"
    r = op.post(url, {"body": "Dear Ada, your refund of 90.00 GBP is on its way."}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200
    draft.refresh_from_db()
    ticket.refresh_from_db()
    assert not draft.is_draft and draft.body.endswith("on its way.") and draft.data["original_body"]
    assert ticket.status == "replied"
    # A sent message is no longer a draft: sending again is a 404 (no such draft).
    assert op.post(url, {"body": ""}).status_code == 404


def test_reassign_escalate_resolve(op):
    ticket, _ = ticket_with_run()
    base = f"/console/tickets/{ticket.pk}"
    r = op.post(f"{base}/reassign/", {"agent": "nobody"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 400 and "agent" in r.content.decode()
    assert op.post(f"{base}/reassign/", {"agent": "technical"}, HTTP_HX_REQUEST="true").status_code == 200
    ticket.refresh_from_db()
    assert (ticket.status, ticket.queue) == ("queued", "technical")
    assert Handoff.objects.filter(ticket=ticket, to_label="technical", from_label="user:operator").exists()

    r = op.post(f"{base}/escalate/", {"reason": ""}, HTTP_HX_REQUEST="true")
    assert r.status_code == 400 and "reason" in r.content.decode()
    assert op.post(f"{base}/escalate/", {"reason": "angry customer"}, HTTP_HX_REQUEST="true").status_code == 200
    ticket.refresh_from_db()
    assert ticket.status == "escalated"

    assert op.post(f"{base}/resolve/", HTTP_HX_REQUEST="true").status_code == 200
    assert Ticket.objects.get(pk=ticket.pk).status == "resolved"
    assert op.get(f"{base}/resolve/").status_code == 405


def test_actions_require_operator_role(client, django_user_model, agent_profiles):
    ticket, run = ticket_with_run()
    approval = pending_refund(ticket, run)
    client.force_login(django_user_model.objects.create_user("guest", "g@example.com", "pw-123456789"))
    assert client.post(f"/console/approvals/{approval.pk}/approve/").status_code == 403
    assert client.get(f"/console/tickets/{ticket.pk}/").status_code == 403
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
