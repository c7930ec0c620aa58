import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import DatabaseError, IntegrityError, connection, transaction

from support_agents.models import ALLOWED_TRANSITIONS, AppendOnlyError, AuditEvent, Ticket, TicketStatus
from support_agents.services.tickets import (
    InvalidTransition,
    customer_get_or_create,
    operator_message_post,
    ticket_create,
    ticket_transition,
)


@pytest.fixture
def ticket(customer):
    return ticket_create(
        customer=customer, subject="", body="My card was charged twice\nplease help", channel="chat"
    )


@pytest.mark.django_db
def test_ticket_create_writes_message_and_audit(ticket):
    assert ticket.reference == f"TCK-{ticket.pk:06d}"
    assert ticket.subject == "My card was charged twice"  # derived from the first line
    assert ticket.status == TicketStatus.NEW
    assert ticket.messages.get().author_kind == "customer"
    assert AuditEvent.objects.get(ticket=ticket).verb == "ticket.created"


def test_reference_parsing():
    assert Ticket.id_from_reference("TCK-000123") == 123
    assert Ticket.id_from_reference("tck-42") == 42
    assert Ticket.id_from_reference("TCK-abc") is None
    assert Ticket.id_from_reference("TCK-" + "9" * 30) is None


def test_transition_table_covers_every_status_and_only_known_statuses():
    assert set(ALLOWED_TRANSITIONS) == set(TicketStatus.values)
    for targets in ALLOWED_TRANSITIONS.values():
        assert targets <= set(TicketStatus.values)


def _walk_to(ticket, path):
    for status in path:
        ticket_transition(ticket, status, actor="system")


@pytest.mark.django_db
def test_allowed_transition_updates_status_audits_in_same_transaction(ticket, agent_profiles):
    ticket_transition(ticket, "triaging", actor="agent:router")
    ticket_transition(
        ticket,
        "queued",
        actor="agent:router",
        reason="routed",
        data={"model": "router"},
        updates={
            "queue": "billing",
            "intent": "card_payment_fee_charged",
            "confidence": 0.93,
            "assigned_agent": agent_profiles["billing"],
        },
    )
    ticket.refresh_from_db()
    assert (ticket.status, ticket.queue, ticket.intent, ticket.assigned_agent.slug) == (
        "queued",
        "billing",
        "card_payment_fee_charged",
        "billing",
    )
    audit = AuditEvent.objects.filter(ticket=ticket, verb="ticket.status_changed").order_by("id")
    assert [(a.data["from"], a.data["to"]) for a in audit] == [("new", "triaging"), ("triaging", "queued")]
    last = audit.last()
    assert last.actor == "agent:router" and last.data["reason"] == "routed" and last.data["model"] == "router"
    assert last.data["updates"]["assigned_agent"] == agent_profiles["billing"].pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], "resolved"),
        ([], "in_progress"),
        (["triaging"], "draft_ready"),
        (["triaging", "queued"], "replied"),
        (["triaging", "queued", "in_progress", "awaiting_approval"], "replied"),
        (["triaging", "failed", "resolved"], "failed"),
    ],
)
def test_invalid_transition_raises_and_changes_nothing(ticket, path, bad):
    _walk_to(ticket, path)
    before = AuditEvent.objects.count()
    status = Ticket.objects.get(pk=ticket.pk).status
    with pytest.raises(InvalidTransition) as exc:
        ticket_transition(ticket, bad, actor="system")
    assert bad in str(exc.value)
    assert Ticket.objects.get(pk=ticket.pk).status == status
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db
def test_full_happy_path_and_reopen(ticket):
    _walk_to(
        ticket,
        [
            "triaging",
            "queued",
            "in_progress",
            "awaiting_approval",
            "in_progress",
            "draft_ready",
            "replied",
            "resolved",
            "in_progress",
        ],
    )
    assert Ticket.objects.get(pk=ticket.pk).status == "in_progress"


@pytest.mark.django_db
def test_transition_uses_current_db_status_not_stale_instance(ticket):
    stale = Ticket.objects.get(pk=ticket.pk)
    ticket_transition(ticket, "triaging", actor="system")
    # `stale` still says new; new->triaging must be refused because the row is triaging now.
    with pytest.raises(InvalidTransition):
        ticket_transition(stale, "triaging", actor="system")


@pytest.mark.django_db
def test_unknown_status_and_fields_refused(ticket):
    with pytest.raises(ValueError):
        ticket_transition(ticket, "bogus", actor="system")
    with pytest.raises(ValueError):
        ticket_transition(ticket, "triaging", actor="system", updates={"body": "x"})


@pytest.mark.django_db
def test_audit_is_append_only_in_orm_and_database(ticket):
    event = AuditEvent.objects.filter(ticket=ticket).first()
    event.verb = "tampered"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(verb="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
        cur.execute("UPDATE support_agents_auditevent SET verb = 'x' WHERE id = %s", [event.pk])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM support_agents_auditevent WHERE id = %s", [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).verb == "ticket.created"


@pytest.mark.django_db
def test_operator_message_post_internal_note(ticket, operator_user):
    note = operator_message_post(ticket=ticket, user=operator_user, body="check the ledger", is_internal=True)
    assert note.is_internal and note.author_kind == "operator" and note.author_user == operator_user
    assert AuditEvent.objects.filter(ticket=ticket, verb="message.created", actor="user:operator").exists()


@pytest.mark.django_db
def test_customer_unique_email_is_enforced_by_db(customer):
    assert customer_get_or_create(email=" JANE.DOE@example.com ", name="Other") == customer
    from support_agents.models import Customer

    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(email="jane.doe@example.com")


@pytest.mark.django_db(transaction=True)
def test_events_reach_inbox_and_ticket_groups_after_commit_only(customer):
    """Real channels_redis layer: the event arrives after commit, and not at all on rollback."""
    layer = get_channel_layer()
    inbox = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("inbox", inbox)

    def receive(channel: str, timeout: float = 3.0):
        async def _recv():
            return await asyncio.wait_for(layer.receive(channel), timeout)

        return async_to_sync(_recv)()

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        ticket_create(customer=customer, subject="rolled back", body="x")
        raise Boom
    ticket = ticket_create(customer=customer, subject="s", body="b")
    per_ticket = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(f"ticket-{ticket.pk}", per_ticket)
    msg = receive(inbox)
    assert msg["type"] == "moedesk.event" and msg["kind"] == "ticket.created"
    assert msg["ticket_id"] == ticket.pk and msg["data"]["reference"] == ticket.reference
    assert "email" not in str(msg["data"])  # no PII on the wire
    ticket_transition(ticket, "triaging", actor="system")
    assert receive(inbox)["kind"] == "ticket.status"
    got = receive(per_ticket)
    assert got["kind"] == "ticket.status" and got["data"]["status"] == "triaging"
    async_to_sync(layer.group_discard)("inbox", inbox)
    async_to_sync(layer.group_discard)(f"ticket-{ticket.pk}", per_ticket)


@pytest.mark.django_db(transaction=True)
def test_publish_event_never_raises_when_redis_is_down(customer, settings):
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    channel_layers.backends.clear()
    try:
        ticket = ticket_create(customer=customer, subject="s", body="b")
        ticket_transition(ticket, "triaging", actor="system")
        assert Ticket.objects.get(pk=ticket.pk).status == "triaging"
    finally:
        channel_layers.backends.clear()
