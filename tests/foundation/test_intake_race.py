"""Deterministic proof that de-duplication rests on the unique index, not on a read-then-write."""

import logging
import threading
import time

import pytest
from django.db import connection, transaction
from django.test import Client

from support_agents.models import InboundEvent, Ticket
from support_agents.services.intake import intake_receive
from tests.helpers import DEMO_SECRET, ticket_body, webhook_headers


def _second_delivery(body: bytes, headers: dict, out: dict, started: threading.Event) -> None:
    try:
        started.set()
        out["resp"] = Client().post(
            "/api/intake/demo/", data=body, content_type="application/json", headers=headers
        )
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first_commits", [True, False])
def test_duplicate_waits_for_in_flight_delivery(intake_source, first_commits):
    body = ticket_body()
    headers = webhook_headers(DEMO_SECRET, body, msg_id="msg_inflight")
    out: dict = {}
    started = threading.Event()
    thread = threading.Thread(target=_second_delivery, args=(body, headers, out, started))

    class Abort(Exception):
        pass

    try:
        with transaction.atomic():
            first = intake_receive(source=intake_source, event_id="msg_inflight", raw=body)
            assert first.status_code == 202
            thread.start()
            started.wait(5)
            time.sleep(0.5)
            # The second delivery has read nothing yet: it is blocked on the unique index.
            assert thread.is_alive() and "resp" not in out
            if not first_commits:
                raise Abort
    except Abort:
        pass
    thread.join(15)
    resp = out["resp"]
    if first_commits:
        assert resp.status_code == 200 and resp.json()["ticket"] == first.body["ticket"]
    else:
        assert resp.status_code == 202  # the first one rolled back, so the second one is the ticket
    assert Ticket.objects.count() == 1 and InboundEvent.objects.count() == 1


@pytest.mark.django_db
def test_logs_carry_no_customer_pii(client, intake_source, caplog):
    from tests.helpers import post_signed

    caplog.set_level(logging.DEBUG)
    body = ticket_body(email="secret.person@example.com", text="my account number is 12345678")
    assert post_signed(client, "demo", body).status_code == 202
    bad = ticket_body(email="other.person@example.com")
    client.post(
        "/api/intake/demo/",
        data=bad,
        content_type="application/json",
        headers={**webhook_headers(DEMO_SECRET, bad), "webhook-signature": "v1,AAAA"},
    )
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "ticket accepted" in text and "intake delivery rejected" in text
    for pii in ("secret.person", "other.person", "12345678", "Jane Doe"):
        assert pii not in text
