"""The ASGI front door for intake (webapp.intake.IntakeASGI): same answers as the Django view.

These drive the real ASGI application object (as uvicorn does). The front answers from its own
threads, so these tests commit (transaction=True) for those threads to see the data.
"""

import asyncio
import json
import time

import pytest
from django.db import connection

from support_agents.models import AuditEvent, Customer, InboundEvent, Message, Ticket
from tests.helpers import DEMO_SECRET, sign_webhook, ticket_body, webhook_headers
from webapp.intake import IntakeASGI, connection_must_go

URL = "/api/intake/demo/"


class Passed(Exception):
    """Raised by the stand-in for Django: the request was handed on."""


async def _django_stand_in(scope, receive, send):
    raise Passed(scope["path"])


def call(
    app,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
    chunks: int = 1,
    content_length: bool = True,
) -> tuple[int, dict[bytes, bytes], dict]:
    """One request through an ASGI app: (status, response headers, JSON body)."""
    hdrs = [(b"host", b"127.0.0.1:8000")]
    if content_length:
        hdrs.append((b"content-length", str(len(body)).encode()))
    hdrs += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": hdrs,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    step = max(1, -(-len(body) // chunks))
    parts = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[dict] = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(payload)


@pytest.fixture
def front():
    app = IntakeASGI(_django_stand_in, threads=2)
    yield app
    app.close()


def signed(body: bytes, **kw) -> dict[str, str]:
    return {"content-type": "application/json", **webhook_headers(DEMO_SECRET, body, **kw)}


@pytest.mark.django_db(transaction=True)
def test_new_ticket_202_then_duplicate_200(front, intake_source):
    body = ticket_body(channel="chat", metadata={"order": 7})
    headers = signed(body, msg_id="msg_front_1")
    status, resp_headers, data = call(front, URL, body, headers)
    assert status == 202, data
    ticket = Ticket.objects.get()
    assert data == {"ticket": ticket.reference, "status": "new"}
    assert resp_headers[b"content-type"] == b"application/json"
    assert int(resp_headers[b"content-length"]) == len(json.dumps(data).encode())
    assert ticket.channel == "chat" and ticket.metadata == {"order": 7} and ticket.source == intake_source
    event = InboundEvent.objects.get()
    assert (event.event_id, event.outcome, event.ticket_id) == ("msg_front_1", "accepted", ticket.pk)
    assert ticket.messages.get().body == ticket.body
    assert AuditEvent.objects.filter(ticket=ticket, verb="ticket.created").count() == 1

    status, _, again = call(front, URL, body, headers)
    assert status == 200 and again == {"ticket": ticket.reference, "status": "new", "duplicate": True}
    assert (Ticket.objects.count(), Message.objects.count(), InboundEvent.objects.count()) == (1, 1, 1)


@pytest.mark.django_db(transaction=True)
def test_every_error_answer_matches_the_view(front, intake_source, settings):
    body = ticket_body()
    bad_sig = {**signed(body), "webhook-signature": "v1,AAAA"}
    assert call(front, URL, body, bad_sig)[0] == 401
    old = signed(body, ts=int(time.time()) - 301)
    assert call(front, URL, body, old)[0] == 401
    assert call(front, "/api/intake/nope/", body, signed(body))[0] == 404
    assert call(front, "/api/intake/bad%00name/", body, signed(body))[0] == 404
    assert call(front, "/api/intake/bad\x00name/", body, signed(body))[0] == 404
    assert call(front, URL, body, {**signed(body), "content-type": "text/plain"})[0] == 415
    status, _, data = call(front, URL, b"{nope", signed(b"{nope"))
    assert status == 400 and "body" in data["errors"]
    invalid = json.dumps({"customer": {"email": "not-an-email"}, "body": "hi"}).encode()
    status, _, data = call(front, URL, invalid, signed(invalid))
    assert status == 400 and "customer.email" in data["errors"]
    assert Ticket.objects.count() == 0
    intake_source.refresh_from_db()
    assert intake_source.rejected_count == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("chunks", "content_length"), [(1, True), (9, True), (9, False)])
def test_over_limit_is_413_whether_declared_or_streamed(front, intake_source, chunks, content_length):
    body = ticket_body(text="x" * (256 * 1024))
    status, _, data = call(front, URL, body, signed(body), chunks=chunks, content_length=content_length)
    assert status == 413 and "larger than" in data["detail"]
    assert InboundEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_body_in_many_chunks_is_reassembled(front, intake_source):
    body = ticket_body(text="chunked " * 200)
    assert call(front, URL, body, signed(body), chunks=7)[0] == 202
    assert Ticket.objects.get().body == "chunked " * 200


@pytest.mark.django_db(transaction=True)
def test_disallowed_host_is_400(front, intake_source):
    body = ticket_body()
    assert call(front, URL, body, {**signed(body), "host": "evil.example"})[0] == 400
    assert Ticket.objects.count() == 0


def test_other_requests_go_to_django():
    app = IntakeASGI(_django_stand_in, threads=1)
    try:
        for method, path in [("GET", URL), ("POST", "/api/tickets/"), ("POST", "/api/intake/a/b/")]:
            with pytest.raises(Passed, match=path):
                call(app, path, method=method)
    finally:
        app.close()


@pytest.mark.django_db(transaction=True)
def test_project_application_serves_intake_through_the_front(intake_source):
    from webapp import asgi

    body = ticket_body()
    status, headers, data = call(asgi.application, URL, body, signed(body))
    assert status == 202 and data["ticket"].startswith("TCK-")
    # Django's middleware would have added X-Frame-Options; the front does not run it.
    assert b"x-frame-options" not in headers
    # GET still reaches the Django view (405 from require_POST).
    scope_status = call_raw_status(asgi.application, URL)
    assert scope_status == 405
    if isinstance(asgi.http_app, IntakeASGI):
        asgi.http_app.close()


def call_raw_status(app, path: str) -> int:
    sent: list[dict] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip

    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # After the body, a client that stays connected sends nothing (Django listens for a disconnect).
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return next(m for m in sent if m["type"] == "http.response.start")["status"]


@pytest.mark.django_db(transaction=True)
def test_kept_connection_goes_when_left_mid_transaction_or_broken():
    connection.ensure_connection()
    try:
        assert not connection_must_go(connection)  # healthy and idle: kept for the next delivery
        connection.errors_occurred = True
        assert not connection_must_go(connection) and not connection.errors_occurred  # still usable
        connection.set_autocommit(False)
        assert connection_must_go(connection)  # left mid-transaction
        connection.set_autocommit(True)
        connection.connection.close()  # the server side went away
        connection.errors_occurred = True
        assert connection_must_go(connection)
    finally:
        connection.close()


def test_close_closes_every_thread_connection_and_pool_restarts(db):
    app = IntakeASGI(_django_stand_in, threads=3)
    opened: list = []

    def touch() -> None:
        from django.db import connections

        connections["default"].ensure_connection()
        opened.append(connections["default"])

    for future in [app._pool().submit(touch) for _ in range(6)]:
        future.result()
    app.close()
    assert opened and all(conn.connection is None for conn in opened)
    assert app._pool() is not None  # a later request gets fresh threads
    app.close()


@pytest.mark.django_db(transaction=True)
def test_signature_over_exact_bytes_across_chunks(front, intake_source):
    body = ticket_body()
    ts = int(time.time())
    headers = {
        "content-type": "application/json; charset=utf-8",
        "webhook-id": "msg_exact",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_webhook(DEMO_SECRET, "msg_exact", ts, body),
    }
    assert call(front, URL, body, headers, chunks=3)[0] == 202
    assert Customer.objects.get().email == "jane.doe@example.com"
