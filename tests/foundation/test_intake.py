import json
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from support_agents.models import (
    AuditEvent,
    Customer,
    InboundEvent,
    IntakeSource,
    Message,
    Ticket,
    TicketStatus,
)
from tests.helpers import DEMO_SECRET, post_signed, sign_webhook, ticket_body, webhook_headers

URL = "/api/intake/demo/"


def counts() -> tuple[int, int, int]:
    return Ticket.objects.count(), Message.objects.count(), InboundEvent.objects.count()


@pytest.mark.django_db
def test_new_ticket_is_202_and_writes_ticket_message_event(client, intake_source):
    body = ticket_body(channel="email", metadata={"order": 42})
    resp = post_signed(client, "demo", body, msg_id="msg_1")
    assert resp.status_code == 202, resp.content
    data = resp.json()
    ticket = Ticket.objects.get()
    assert data == {"ticket": ticket.reference, "status": "new"}
    assert data["ticket"].startswith("TCK-") and len(data["ticket"]) == 10
    assert ticket.channel == "email" and ticket.metadata == {"order": 42} and ticket.source == intake_source
    assert ticket.customer.email == "jane.doe@example.com"
    msg = ticket.messages.get()
    assert msg.author_kind == "customer" and msg.body == ticket.body and not msg.is_internal
    event = InboundEvent.objects.get()
    assert (event.event_id, event.outcome, event.ticket) == ("msg_1", "accepted", ticket)
    assert json.loads(event.raw_body) == json.loads(body)
    assert AuditEvent.objects.filter(ticket=ticket, verb="ticket.created").count() == 1


@pytest.mark.django_db
def test_same_webhook_id_again_is_200_with_same_ticket(client, intake_source):
    body = ticket_body()
    first = post_signed(client, "demo", body, msg_id="msg_dup")
    before = counts()
    again = post_signed(client, "demo", body, msg_id="msg_dup")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["ticket"] == first.json()["ticket"] and again.json()["duplicate"] is True
    assert counts() == before


@pytest.mark.django_db
def test_customer_is_reused_case_insensitively(client, intake_source):
    post_signed(client, "demo", ticket_body(email="Jane.Doe@Example.com"))
    post_signed(client, "demo", ticket_body(email="jane.doe@example.com"))
    assert Customer.objects.count() == 1 and Ticket.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda h: h.pop("webhook-signature"), id="missing-signature"),
        pytest.param(lambda h: h.pop("webhook-id"), id="missing-id"),
        pytest.param(lambda h: h.pop("webhook-timestamp"), id="missing-timestamp"),
        pytest.param(lambda h: h.update({"webhook-signature": "v1,AAAA"}), id="wrong-signature"),
        pytest.param(
            lambda h: h.update({"webhook-signature": "v2," + h["webhook-signature"][3:]}), id="wrong-version"
        ),
        pytest.param(lambda h: h.update({"webhook-id": "other"}), id="id-not-signed"),
        pytest.param(lambda h: h.update({"webhook-timestamp": "abc"}), id="malformed-timestamp"),
    ],
)
def test_bad_signature_is_401_and_stores_nothing(client, intake_source, mutate):
    body = ticket_body()
    headers = webhook_headers(DEMO_SECRET, body)
    mutate(headers)
    resp = client.post(URL, data=body, content_type="application/json", headers=headers)
    assert resp.status_code == 401
    assert counts() == (0, 0, 0)
    intake_source.refresh_from_db()
    assert intake_source.rejected_count == 1 and intake_source.last_rejected_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [-301, 301, -3600])
def test_expired_or_future_timestamp_is_401(client, intake_source, skew):
    body = ticket_body()
    resp = post_signed(client, "demo", body, ts=int(time.time()) + skew)
    assert resp.status_code == 401 and counts() == (0, 0, 0)


@pytest.mark.django_db
def test_timestamp_inside_tolerance_is_accepted(client, intake_source):
    assert post_signed(client, "demo", ticket_body(), ts=int(time.time()) - 280).status_code == 202


@pytest.mark.django_db
def test_body_changed_after_signing_is_401(client, intake_source):
    body = ticket_body()
    headers = webhook_headers(DEMO_SECRET, body)
    resp = client.post(
        URL, data=body.replace(b"twice", b"thrice"), content_type="application/json", headers=headers
    )
    assert resp.status_code == 401


@pytest.mark.django_db
def test_secret_rotation_accepts_old_and_new_until_old_dropped(client, intake_source):
    from support_agents.services.intake import intake_source_rotate

    new_secret = intake_source_rotate(source=intake_source)
    assert post_signed(client, "demo", ticket_body(), secret=DEMO_SECRET).status_code == 202
    assert post_signed(client, "demo", ticket_body(), secret=new_secret).status_code == 202
    newest = intake_source_rotate(source=intake_source, keep_old=False)
    assert post_signed(client, "demo", ticket_body(), secret=DEMO_SECRET).status_code == 401
    assert post_signed(client, "demo", ticket_body(), secret=new_secret).status_code == 401
    assert post_signed(client, "demo", ticket_body(), secret=newest).status_code == 202
    assert AuditEvent.objects.filter(verb="intake_source.rotated").count() == 2


@pytest.mark.django_db
def test_several_signatures_in_header_any_valid_one_is_enough(client, intake_source):
    body = ticket_body()
    ts = int(time.time())
    good = sign_webhook(DEMO_SECRET, "msg_multi", ts, body)
    bad = sign_webhook("whsec_" + "QUJD" * 8, "msg_multi", ts, body)
    headers = {
        "webhook-id": "msg_multi",
        "webhook-timestamp": str(ts),
        "webhook-signature": f"{bad} v1,!!! {good}",
    }
    resp = client.post(URL, data=body, content_type="application/json", headers=headers)
    assert resp.status_code == 202


@pytest.mark.django_db
def test_unknown_or_disabled_source_is_404(client, intake_source):
    assert post_signed(client, "nope", ticket_body()).status_code == 404
    IntakeSource.objects.filter(pk=intake_source.pk).update(enabled=False)
    assert post_signed(client, "demo", ticket_body()).status_code == 404
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"body": "hi"}, "customer"),
        ({"customer": "x@y.z", "body": "hi"}, "customer"),
        ({"customer": {"name": "A"}, "body": "hi"}, "customer.email"),
        ({"customer": {"email": "not-an-email"}, "body": "hi"}, "customer.email"),
        ({"customer": {"email": "a@b.co"}}, "body"),
        ({"customer": {"email": "a@b.co"}, "body": "   "}, "body"),
        ({"customer": {"email": "a@b.co"}, "body": 5}, "body"),
        ({"customer": {"email": "a@b.co"}, "body": "hi", "channel": "fax"}, "channel"),
        ({"customer": {"email": "a@b.co"}, "body": "hi", "metadata": [1]}, "metadata"),
        ({"customer": {"email": "a@b.co"}, "body": "nul\x00byte"}, "body"),
        ({"customer": {"email": "a@b.co"}, "body": "hi", "subject": "s" * 301}, "subject"),
        ({"customer": {"email": "a@b.co"}, "body": "hi", "metadata": {"k": "\x00"}}, "metadata.k"),
    ],
)
def test_schema_errors_are_400_with_field_messages(client, intake_source, payload, field):
    resp = post_signed(client, "demo", json.dumps(payload).encode())
    assert resp.status_code == 400
    assert field in resp.json()["errors"], resp.json()
    assert Ticket.objects.count() == 0
    assert InboundEvent.objects.get().outcome == "invalid"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"a": NaN}', b"[" * 100_000, b'"\\ud800"', b"1" * 5000],
)
def test_invalid_json_is_400(client, intake_source, raw):
    resp = post_signed(client, "demo", raw)
    assert resp.status_code == 400 and "body" in resp.json()["errors"]
    assert Ticket.objects.count() == 0


@pytest.mark.django_db
def test_lone_surrogate_in_string_is_400_not_500(client, intake_source):
    raw = b'{"customer": {"email": "a@b.co"}, "body": "x\\ud800y"}'
    resp = post_signed(client, "demo", raw)
    assert resp.status_code == 400 and "body" in resp.json()["errors"]


@pytest.mark.django_db
def test_over_256_kib_is_413(client, intake_source):
    body = ticket_body(text="x" * (256 * 1024))
    resp = post_signed(client, "demo", body)
    assert resp.status_code == 413 and counts() == (0, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client, intake_source, ctype):
    body = ticket_body()
    resp = client.post(URL, data=body, content_type=ctype, headers=webhook_headers(DEMO_SECRET, body))
    assert resp.status_code == 415


@pytest.mark.django_db
def test_content_type_with_charset_is_fine(client, intake_source):
    body = ticket_body()
    resp = client.post(
        URL,
        data=body,
        content_type="application/json; charset=utf-8",
        headers=webhook_headers(DEMO_SECRET, body),
    )
    assert resp.status_code == 202


@pytest.mark.django_db
def test_get_is_405(client, intake_source):
    assert client.get(URL).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_deliveries_make_one_ticket(intake_source):
    """Pairs of threads post the same webhook-id at the same instant: one 202 + one 200 per id."""
    rounds = 8
    results: dict[int, list[int]] = {i: [] for i in range(rounds)}
    tickets: dict[int, set[str]] = {i: set() for i in range(rounds)}
    lock = threading.Lock()
    barriers = {i: threading.Barrier(2) for i in range(rounds)}
    bodies = {i: ticket_body(email=f"race{i}@example.com") for i in range(rounds)}
    stamp = int(time.time())

    def deliver(i: int) -> None:
        try:
            c = Client()
            headers = webhook_headers(DEMO_SECRET, bodies[i], msg_id=f"msg_race_{i}", ts=stamp)
            barriers[i].wait()
            resp = c.post(URL, data=bodies[i], content_type="application/json", headers=headers)
            with lock:
                results[i].append(resp.status_code)
                tickets[i].add(resp.json()["ticket"])
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(rounds) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i in range(rounds):
        assert sorted(results[i]) == [200, 202], results
        assert len(tickets[i]) == 1
    assert Ticket.objects.count() == rounds
    assert InboundEvent.objects.count() == rounds
    assert Message.objects.count() == rounds
    assert set(Ticket.objects.values_list("status", flat=True)) <= {
        TicketStatus.NEW,
        TicketStatus.TRIAGING,
        "queued",
    }
