import pytest
from django.test import Client

from support_agents.models import Message
from support_agents.services.tickets import ticket_create, ticket_transition
from support_agents.services.tokens import api_token_create


@pytest.fixture
def tickets(customer):
    a = ticket_create(customer=customer, subject="Refund please", body="I was charged twice", channel="email")
    b = ticket_create(customer=customer, subject="App crash", body="The app crashes on login", channel="chat")
    ticket_transition(b, "triaging", actor="system")
    ticket_transition(b, "queued", actor="system", updates={"queue": "technical", "intent": "app_crash"})
    return a, b


@pytest.fixture
def token(operator_user):
    return api_token_create(user=operator_user)[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.django_db
def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/tickets" in paths and "/api/tickets/{reference}/messages" in paths
    assert client.get("/api/docs").status_code == 200


@pytest.mark.django_db
def test_list_requires_auth(client, tickets):
    assert client.get("/api/tickets").status_code == 401
    assert client.get("/api/tickets", headers=bearer("mdk_wrong")).status_code == 401


@pytest.mark.django_db
def test_list_with_token_and_filters(client, tickets, token):
    a, b = tickets
    resp = client.get("/api/tickets", headers=bearer(token))
    assert resp.status_code == 200
    data = resp.json()
    assert data["count"] == 2 and [t["reference"] for t in data["items"]] == [b.reference, a.reference]
    one = client.get("/api/tickets?queue=technical&status=queued", headers=bearer(token)).json()
    assert [t["reference"] for t in one["items"]] == [b.reference]
    assert one["items"][0]["intent"] == "app_crash"
    by_ref = client.get(f"/api/tickets?q={a.reference}", headers=bearer(token)).json()
    assert [t["reference"] for t in by_ref["items"]] == [a.reference]
    by_text = client.get("/api/tickets?q=crashes", headers=bearer(token)).json()
    assert [t["reference"] for t in by_text["items"]] == [b.reference]
    page = client.get("/api/tickets?limit=1&offset=1", headers=bearer(token)).json()
    assert page["count"] == 2 and [t["reference"] for t in page["items"]] == [a.reference]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query", ["status=bogus", "limit=0", "limit=1000", "queue=nope", "created_after=yesterday"]
)
def test_bad_filters_are_400_with_field_messages(client, tickets, token, query):
    resp = client.get(f"/api/tickets?{query}", headers=bearer(token))
    assert resp.status_code == 400
    assert resp.json()["errors"], resp.json()


@pytest.mark.django_db
def test_detail_includes_messages(client, tickets, token):
    a, _ = tickets
    resp = client.get(f"/api/tickets/{a.reference}", headers=bearer(token))
    assert resp.status_code == 200
    data = resp.json()
    assert data["reference"] == a.reference and data["customer"]["email"] == "jane.doe@example.com"
    assert [m["author_kind"] for m in data["messages"]] == ["customer"]
    assert client.get("/api/tickets/TCK-999999", headers=bearer(token)).status_code == 404
    assert client.get("/api/tickets/garbage", headers=bearer(token)).status_code == 404


@pytest.mark.django_db
def test_post_operator_message_and_note(client, tickets, token, operator_user):
    a, _ = tickets
    url = f"/api/tickets/{a.reference}/messages"
    resp = client.post(
        url,
        {"body": "We are on it", "internal": False},
        content_type="application/json",
        headers=bearer(token),
    )
    assert resp.status_code == 201, resp.content
    assert resp.json()["author_kind"] == "operator" and resp.json()["is_internal"] is False
    resp = client.post(
        url,
        {"body": "check ledger", "internal": True},
        content_type="application/json",
        headers=bearer(token),
    )
    assert resp.status_code == 201 and resp.json()["is_internal"] is True
    msgs = Message.objects.filter(ticket=a, author_kind="operator")
    assert msgs.count() == 2 and {m.author_user for m in msgs} == {operator_user}


@pytest.mark.django_db
@pytest.mark.parametrize("payload", [{}, {"body": ""}, {"body": "   "}, {"body": 5}, {"body": "a\x00b"}])
def test_post_message_validation(client, tickets, token, payload):
    a, _ = tickets
    resp = client.post(
        f"/api/tickets/{a.reference}/messages",
        payload,
        content_type="application/json",
        headers=bearer(token),
    )
    assert resp.status_code == 400 and "body" in resp.json()["errors"], resp.content


@pytest.mark.django_db
def test_session_auth_needs_operator_role_and_csrf(tickets, operator_user, django_user_model):
    outsider = django_user_model.objects.create(username="outsider")
    c = Client()
    c.force_login(outsider)
    assert c.get("/api/tickets").status_code == 403
    c.force_login(operator_user)
    assert c.get("/api/tickets").status_code == 200
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator_user)
    a, _ = tickets
    resp = strict.post(
        f"/api/tickets/{a.reference}/messages", {"body": "hi"}, content_type="application/json"
    )
    assert resp.status_code in (401, 403)


@pytest.mark.django_db
def test_revoked_token_is_refused(client, tickets, operator_user):
    from support_agents.services.tokens import api_token_revoke

    token, key = api_token_create(user=operator_user)
    assert client.get("/api/tickets", headers=bearer(key)).status_code == 200
    api_token_revoke(token=token)
    assert client.get("/api/tickets", headers=bearer(key)).status_code == 401
