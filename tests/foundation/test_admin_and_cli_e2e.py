import io
import re

import pytest
from django.core.management import call_command

from support_agents.models import AuditEvent, InboundEvent, IntakeSource, Ticket
from support_agents.services.tickets import ticket_create


@pytest.mark.django_db
def test_admin_changelists_render_with_search_and_filters(client, admin_user, customer, intake_source):
    ticket = ticket_create(customer=customer, subject="Refund", body="charged twice")
    client.force_login(admin_user)
    for model in (
        "ticket",
        "customer",
        "message",
        "agentprofile",
        "intakesource",
        "inboundevent",
        "auditevent",
        "apitoken",
    ):
        resp = client.get(f"/admin/support_agents/{model}/")
        assert resp.status_code == 200, model
    resp = client.get(f"/admin/support_agents/ticket/?q={ticket.reference}")
    assert ticket.reference.encode() in resp.content
    assert client.get("/admin/support_agents/ticket/?status__exact=new&queue__exact=").status_code == 200
    assert client.get(f"/admin/support_agents/ticket/{ticket.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_admin_refuses_audit_changes(client, admin_user, customer):
    ticket = ticket_create(customer=customer, subject="Refund", body="charged twice")
    event = AuditEvent.objects.get(ticket=ticket)
    client.force_login(admin_user)
    assert client.get("/admin/support_agents/auditevent/add/").status_code == 403
    assert (
        client.post(f"/admin/support_agents/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    page = client.get(f"/admin/support_agents/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.django_db
def test_admin_rotate_action(client, admin_user, intake_source):
    client.force_login(admin_user)
    resp = client.post(
        "/admin/support_agents/intakesource/",
        {"action": "rotate_secret", "_selected_action": [intake_source.pk]},
        follow=True,
    )
    assert resp.status_code == 200 and b"new secret whsec_" in resp.content
    intake_source.refresh_from_db()
    assert len(intake_source.secrets) == 2


@pytest.mark.django_db(transaction=True)
def test_send_ticket_command_posts_signed_ticket_to_a_live_server(live_server, intake_source):
    out = io.StringIO()
    call_command(
        "send_ticket",
        "My card was charged twice",
        "--source",
        "demo",
        "--email",
        "a@b.co",
        "--url",
        live_server.url,
        "--id",
        "msg_cli",
        stdout=out,
    )
    assert re.match(r"202 .*TCK-\d{6}", out.getvalue())
    call_command(
        "send_ticket",
        "again",
        "--source",
        "demo",
        "--email",
        "a@b.co",
        "--url",
        live_server.url,
        "--id",
        "msg_cli",
        stdout=out,
    )
    assert "200 " in out.getvalue()
    assert Ticket.objects.count() == 1 and InboundEvent.objects.get().event_id == "msg_cli"
    assert IntakeSource.objects.get(name="demo").rejected_count == 0
