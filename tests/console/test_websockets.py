"""Websocket access rules, against the real ASGI stack (origin validator, sessions in PostgreSQL)
and the real Redis channel layer."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.db import transaction

from support_agents.events import publish_event
from support_agents.models import Customer, Ticket
from support_agents.permissions import OPERATORS
from webapp.asgi import application
from webapp.console.consumers import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend():
    return "asyncio"

ORIGIN = (b"origin", b"http://localhost")


def _cookie(client, user) -> tuple[bytes, bytes]:
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def _ticket(subject: str = "Card blocked") -> Ticket:
    customer, _ = Customer.objects.get_or_create(email="ws@example.com", defaults={"name": "W S"})
    return Ticket.objects.create(subject=subject, body="text", customer=customer)


async def _connect(path: str, headers: list) -> tuple[WebsocketCommunicator, bool, int | None]:
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await comm.connect(timeout=5)
    if not connected:
        await comm.disconnect(timeout=5)  # end the refused instance so it stops listening on Redis
    return comm, connected, code


def _publish(kind: str, ticket_id: int | None, data: dict) -> None:
    with transaction.atomic():
        publish_event(kind, ticket_id=ticket_id, data=data)


async def _next_event(comm: WebsocketCommunicator, kind: str, timeout: float = 5) -> dict:
    """Skip unrelated traffic on the shared "inbox" group (other tests' events) until `kind`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        msg = await comm.receive_json_from(timeout=max(left, 0.01))
        if msg.get("kind") == kind:
            return msg


async def test_anonymous_connection_is_refused():
    comm, connected, code = await _connect("/ws/console/inbox/", [ORIGIN])
    assert not connected
    assert code == CLOSE_UNAUTHENTICATED


async def test_wrong_origin_is_refused_even_with_a_valid_session(client, operator_user):
    cookie = await sync_to_async(_cookie)(client, operator_user)
    for origin in (b"http://evil.example",):
        comm, connected, _ = await _connect("/ws/console/inbox/", [(b"origin", origin), cookie])
        assert not connected, origin
    # No Origin header at all (non-browser client) is refused too.
    comm, connected, _ = await _connect("/ws/console/inbox/", [cookie])
    assert not connected


async def test_signed_in_user_without_a_role_is_refused(client, django_user_model):
    user = await sync_to_async(django_user_model.objects.create_user)("nobody", "n@example.com", "pw-123456789")
    cookie = await sync_to_async(_cookie)(client, user)
    comm, connected, code = await _connect("/ws/console/inbox/", [ORIGIN, cookie])
    assert not connected
    assert code == CLOSE_FORBIDDEN


async def test_operator_receives_inbox_events_after_commit(client, operator_user):
    cookie = await sync_to_async(_cookie)(client, operator_user)
    comm, connected, _ = await _connect("/ws/console/inbox/", [ORIGIN, cookie])
    assert connected
    ticket = await sync_to_async(_ticket)()
    await sync_to_async(_publish)("ticket.status", ticket.pk, {"status": "queued"})
    msg = await _next_event(comm, "ticket.status")
    assert msg == {"type": "event", "kind": "ticket.status", "ticket_id": ticket.pk, "data": {"status": "queued"}}
    await comm.disconnect()


async def test_rolled_back_transaction_sends_nothing(client, operator_user):
    cookie = await sync_to_async(_cookie)(client, operator_user)
    comm, connected, _ = await _connect("/ws/console/inbox/", [ORIGIN, cookie])
    assert connected

    def rolled_back():
        with pytest.raises(RuntimeError), transaction.atomic():
            publish_event("ticket.ghost", ticket_id=None, data={})
            raise RuntimeError("roll back")

    await sync_to_async(rolled_back)()
    await sync_to_async(_publish)("ticket.marker", None, {})
    msg = await _next_event(comm, "ticket.marker")  # arrives; the ghost before it never did
    assert msg["kind"] == "ticket.marker"
    await comm.disconnect()


async def test_ticket_socket_gets_only_its_own_ticket(client, operator_user):
    cookie = await sync_to_async(_cookie)(client, operator_user)
    mine, other = await sync_to_async(_ticket)("mine"), await sync_to_async(_ticket)("other")
    comm, connected, _ = await _connect(f"/ws/console/tickets/{mine.pk}/", [ORIGIN, cookie])
    assert connected
    await sync_to_async(_publish)("message.created", other.pk, {"n": 1})
    await sync_to_async(_publish)("message.created", mine.pk, {"n": 2})
    msg = await comm.receive_json_from(timeout=5)
    assert (msg["ticket_id"], msg["data"]) == (mine.pk, {"n": 2})
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_ticket_socket_for_missing_ticket_is_refused(client, operator_user):
    cookie = await sync_to_async(_cookie)(client, operator_user)
    comm, connected, code = await _connect("/ws/console/tickets/999999999/", [ORIGIN, cookie])
    assert not connected
    assert code == CLOSE_NOT_FOUND


async def test_admin_events_reach_admins_only(client, operator_user, admin_user):
    from django.test import Client

    op_cookie = await sync_to_async(_cookie)(client, operator_user)
    admin_cookie = await sync_to_async(_cookie)(Client(), admin_user)
    op, ok1, _ = await _connect("/ws/console/inbox/", [ORIGIN, op_cookie])
    adm, ok2, _ = await _connect("/ws/console/inbox/", [ORIGIN, admin_cookie])
    assert ok1 and ok2
    await sync_to_async(_publish)("admin.agent_profile_updated", None, {"slug": "billing"})
    await sync_to_async(_publish)("ticket.marker", None, {})
    assert (await _next_event(adm, "admin.agent_profile_updated"))["data"] == {"slug": "billing"}
    # The operator sees the marker but never the admin event that was sent before it.
    seen = []
    while True:
        msg = await op.receive_json_from(timeout=5)
        seen.append(msg["kind"])
        if msg["kind"] == "ticket.marker":
            break
    assert "admin.agent_profile_updated" not in seen
    await op.disconnect()
    await adm.disconnect()


async def test_logout_closes_open_sockets_and_revoked_role_cannot_reconnect(client, operator_user):
    cookie = await sync_to_async(_cookie)(client, operator_user)
    comm, connected, _ = await _connect("/ws/console/inbox/", [ORIGIN, cookie])
    assert connected
    await sync_to_async(client.post)("/accounts/logout/")
    while True:  # skip any event traffic still queued before the close
        out = await comm.receive_output(timeout=5)
        if out["type"] == "websocket.close":
            break
    assert out == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
    # Same (now dead) session cookie: refused.
    comm2, connected2, code2 = await _connect("/ws/console/inbox/", [ORIGIN, cookie])
    assert not connected2 and code2 == CLOSE_UNAUTHENTICATED

    # A user whose operator role is removed cannot open a new socket.
    cookie = await sync_to_async(_cookie)(client, operator_user)
    await sync_to_async(operator_user.groups.remove)(await sync_to_async(Group.objects.get)(name=OPERATORS))
    comm3, connected3, code3 = await _connect("/ws/console/inbox/", [ORIGIN, cookie])
    assert not connected3 and code3 == CLOSE_FORBIDDEN
