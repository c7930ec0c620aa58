"""The intake write path: what it writes, how often it writes it, and what it publishes."""

import asyncio
import base64
import json
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, connections, transaction

from support_agents.events import flush_events, send_now
from support_agents.models import Customer, InboundEvent, Message, Ticket
from support_agents.services.intake import intake_receive, intake_source_get
from support_agents.services.tickets import customer_get_or_create, ticket_create
from tests.helpers import ticket_body


def _table_writes(table: str) -> tuple[int, int]:
    """(rows inserted, rows updated) in `table` by the current transaction so far."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
            [f"support_agents_{table}"],
        )
        row = cur.fetchone()
    return (row[0], row[1]) if row else (0, 0)


@pytest.mark.django_db
def test_accepted_delivery_writes_each_row_once_and_never_updates(intake_source, customer):
    # `customer` exists already (Jane Doe): a returning customer is read, not rewritten.
    before = {t: _table_writes(t) for t in ("inboundevent", "ticket", "message", "auditevent", "customer")}
    result = intake_receive(source=intake_source, event_id="msg_once", raw=ticket_body())
    assert result.status_code == 202
    after = {t: _table_writes(t) for t in before}
    delta = {t: (after[t][0] - before[t][0], after[t][1] - before[t][1]) for t in before}
    assert delta == {
        "inboundevent": (1, 0),  # written once, with its ticket id already in it
        "ticket": (1, 0),
        "message": (1, 0),
        "auditevent": (1, 0),
        "customer": (0, 0),
    }
    event = InboundEvent.objects.get(event_id="msg_once")
    assert event.ticket_id == result.ticket.pk and event.ticket.customer == customer


@pytest.mark.django_db
def test_ticket_create_returns_a_saved_instance_equal_to_the_row(customer, intake_source):
    ticket = ticket_create(
        customer=customer, subject="  ", body="First line\nsecond", channel="email", metadata={"k": [1, 2]},
        source=intake_source,
    )  # fmt: skip
    stored = Ticket.objects.get(pk=ticket.pk)
    for field in ("subject", "body", "channel", "status", "priority", "queue", "metadata", "source_id"):
        assert getattr(ticket, field) == getattr(stored, field), field
    assert ticket.created_at == stored.created_at and ticket.updated_at == stored.updated_at
    assert ticket.subject == "First line" and not ticket._state.adding
    msg = Message.objects.get(ticket=ticket)
    assert (msg.author_kind, msg.author_name, msg.body) == ("customer", "Jane Doe", "First line\nsecond")
    audit = stored.audit_events.get()
    assert audit.actor == "intake:demo" and audit.data == {"channel": "email", "source": "demo"}


@pytest.mark.django_db
def test_ticket_create_with_reserved_id_uses_it(customer):
    with connection.cursor() as cur:
        cur.execute("SELECT nextval(pg_get_serial_sequence('support_agents_ticket', 'id'))")
        reserved = cur.fetchone()[0]
    ticket = ticket_create(customer=customer, subject="s", body="b", ticket_id=reserved)
    assert ticket.pk == reserved and Ticket.objects.filter(pk=reserved).exists()


@pytest.mark.django_db
def test_customer_get_or_create_creates_reads_and_fills_blanks():
    first = customer_get_or_create(email=" New.Person@Example.com ", name=" ")
    assert first.email == "new.person@example.com" and first.name == "" and first.pk
    again = customer_get_or_create(email="new.person@example.com", name="New Person", external_id="ext-9")
    assert again.pk == first.pk
    stored = Customer.objects.get(pk=first.pk)
    assert (stored.name, stored.external_id) == ("New Person", "ext-9")
    customer_get_or_create(email="new.person@example.com", name="Other Name", external_id="other")
    stored.refresh_from_db()
    assert (stored.name, stored.external_id) == ("New Person", "ext-9")  # never overwritten
    assert Customer.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_customer_inserted_concurrently_is_found_not_duplicated():
    """Another transaction inserts the email while ours is in flight: ours waits and returns that row."""
    other = connections.create_connection("default")
    out: dict = {}
    try:
        other.set_autocommit(False)
        with other.cursor() as cur:
            cur.execute(
                "INSERT INTO support_agents_customer (email, name, external_id, created_at) "
                "VALUES ('race@example.com', 'First', '', now()) RETURNING id"
            )
            other_id = cur.fetchone()[0]

        def ours() -> None:
            try:
                out["customer"] = customer_get_or_create(email="race@example.com", name="Second")
            finally:
                connection.close()

        thread = threading.Thread(target=ours)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # blocked on the unique index behind the uncommitted insert
        other.commit()
        thread.join(10)
    finally:
        other.close()
    assert out["customer"].pk == other_id and out["customer"].name == "First"
    assert Customer.objects.filter(email="race@example.com").count() == 1


@pytest.mark.django_db
def test_source_names_that_cannot_exist_are_none(intake_source):
    assert intake_source_get("demo").secrets == intake_source.secrets
    assert intake_source_get("de\x00mo") is None
    assert intake_source_get("x" * 65) is None
    intake_source.enabled = False
    intake_source.save(update_fields=["enabled"])
    assert intake_source_get("demo") is None


@pytest.mark.django_db
def test_duplicate_inside_one_transaction_answers_without_writing(intake_source):
    first = intake_receive(source=intake_source, event_id="msg_same", raw=ticket_body())
    again = intake_receive(source=intake_source, event_id="msg_same", raw=ticket_body(text="changed"))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.body["ticket"] == first.body["ticket"]
    assert Ticket.objects.count() == 1 and InboundEvent.objects.count() == 1


def _receive(layer, channel: str, timeout: float) -> dict | None:
    async def _recv():
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout)
        except TimeoutError:
            return None

    return async_to_sync(_recv)()


@pytest.mark.django_db(transaction=True)
def test_ticket_created_goes_to_the_inbox_only_other_events_to_both():
    layer = get_channel_layer()
    inbox, watcher = async_to_sync(layer.new_channel)(), async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("inbox", inbox)
    async_to_sync(layer.group_add)("ticket-987654", watcher)
    try:
        send_now("ticket.created", 987654, {"n": 1}, inbox_only=True)
        send_now("ticket.status", 987654, {"n": 2})
        flush_events()
        assert _receive(layer, inbox, 3)["kind"] == "ticket.created"
        assert _receive(layer, inbox, 3)["kind"] == "ticket.status"
        assert _receive(layer, watcher, 3)["kind"] == "ticket.status"  # not ticket.created first
        assert _receive(layer, watcher, 0.3) is None
    finally:
        async_to_sync(layer.group_discard)("inbox", inbox)
        async_to_sync(layer.group_discard)("ticket-987654", watcher)


@pytest.mark.django_db(transaction=True)
def test_triage_is_enqueued_after_commit_without_a_result_subscription(customer):
    import redis
    from django.conf import settings

    from tests.helpers import purge_celery_queues

    purge_celery_queues()
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    with transaction.atomic():
        ticket = ticket_create(customer=customer, subject="s", body="b")
        assert client.llen("triage") == 0  # nothing before commit
    raw = client.lpop("triage")
    assert raw is not None
    message = json.loads(raw)
    assert message["headers"]["task"] == "support_agents.triage_ticket"
    assert message["headers"]["ignore_result"] is True
    assert json.loads(base64.b64decode(message["body"]))[0] == [ticket.pk]
