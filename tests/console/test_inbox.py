"""Inbox, login and roles over HTTP (Django test client, real PostgreSQL)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from support_agents.models import Customer, Ticket
from webapp.console.consumers import origin_allowed
from webapp.console.models import SavedView
from webapp.console.selectors import sla_state

pytestmark = pytest.mark.django_db


@pytest.fixture
def tickets(db):
    alice = Customer.objects.create(email="alice@example.com", name="Alice Archer")
    bob = Customer.objects.create(email="bob@example.com", name="Bob Baker")
    made = [
        Ticket.objects.create(subject="Refund for double charge", body="charged twice", customer=alice,
                              status="queued", queue="billing", intent="card_payment_fee_charged", priority="high"),
        Ticket.objects.create(subject="Card stopped working", body="declined at the shop", customer=bob,
                              status="in_progress", queue="technical", intent="card_not_working"),
        Ticket.objects.create(subject="Which currencies?", body="do you support JPY", customer=alice,
                              status="resolved", queue="sales", intent="supported_cards_and_currencies"),
        Ticket.objects.create(subject="Unrouted one", body="hello", customer=bob, status="new"),
    ]
    return made


def test_anonymous_is_sent_to_login(client):
    for url in ("/console/", "/console/inbox/rows/", "/console/dashboard/", "/console/routing/"):
        r = client.get(url)
        assert r.status_code == 302 and r.url.startswith("/accounts/login/"), url


def test_login_page_and_bad_password(client, operator_user):
    r = client.get("/accounts/login/")
    assert r.status_code == 200 and b"Log in to MoEDesk" in r.content
    r = client.post("/accounts/login/", {"username": "operator", "password": "wrong"})
    assert r.status_code == 200 and b"Please enter a correct username and password" in r.content
    r = client.post("/accounts/login/", {"username": "operator", "password": "correct-horse-battery-staple",
                                         "next": "/console/"})
    assert r.status_code == 302 and r.url == "/console/"


def test_user_without_role_gets_403(client, django_user_model):
    user = django_user_model.objects.create_user("nobody", "n@example.com", "pw-123456789")
    client.force_login(user)
    assert client.get("/console/").status_code == 403


def test_inbox_lists_open_tickets_with_counts(client, operator_user, tickets):
    client.force_login(operator_user)
    r = client.get("/console/")
    assert r.status_code == 200
    html = r.content.decode()
    for t in tickets[:2] + tickets[3:]:
        assert t.reference in html
    assert tickets[2].reference not in html  # resolved is hidden from the default "open" view
    counts = r.context["counts"]
    assert counts["billing"] == 1 and counts["technical"] == 1 and counts[""] == 1 and counts["_total"] == 3
    assert "sales" not in counts  # its only ticket is resolved
    assert 'data-ws="/ws/console/inbox/"' in html


@pytest.mark.parametrize("query, expected", [
    ("queue=billing", [0]),
    ("status=resolved", [2]),
    ("status=&queue=sales", [2]),
    ("queue=none", [3]),
    ("priority=high", [0]),
    ("intent=card_not_working", [1]),
    ("q=JPY&status=", [2]),
    ("q=bob%40example", [1, 3]),
    ("q=double+charge", [0]),
])
def test_inbox_filters(client, operator_user, tickets, query, expected):
    client.force_login(operator_user)
    r = client.get(f"/console/inbox/rows/?{query}")
    assert r.status_code == 200
    got = sorted(row["t"].pk for row in r.context["rows"])
    assert got == sorted(tickets[i].pk for i in expected)


def test_search_by_reference_finds_exactly_that_ticket(client, operator_user, tickets):
    client.force_login(operator_user)
    r = client.get(f"/console/inbox/rows/?status=&q={tickets[2].reference.lower()}")
    assert [row["t"].pk for row in r.context["rows"]] == [tickets[2].pk]


def test_invalid_filters_are_a_400_with_field_messages(client, operator_user, tickets):
    client.force_login(operator_user)
    r = client.get("/console/inbox/rows/?status=bogus&page=0")
    assert r.status_code == 400
    html = r.content.decode()
    assert "status" in html and "Select a valid choice" in html
    assert "page" in html and "greater than or equal to 1" in html
    assert client.get("/console/?sort=drop+table").status_code == 400


def test_pagination_and_priority_sort(client, operator_user, tickets):
    customer = tickets[0].customer
    Ticket.objects.bulk_create([Ticket(subject=f"bulk {i}", body="x", customer=customer, priority="low")
                                for i in range(30)])
    client.force_login(operator_user)
    r = client.get("/console/inbox/rows/?status=open&sort=priority")
    page = r.context["page"]
    assert page.paginator.count == 33 and len(r.context["rows"]) == 25
    assert r.context["rows"][0]["t"].priority == "high"
    r2 = client.get("/console/inbox/rows/?status=open&sort=priority&page=2")
    assert len(r2.context["rows"]) == 8
    assert r2.context["rows"][-1]["t"].priority == "low"
    # A page past the end shows the last page rather than failing.
    assert client.get("/console/inbox/rows/?page=99").status_code == 200


def test_saved_views_private_shared_and_owner_only_delete(client, operator_user, admin_user, tickets):
    client.force_login(operator_user)
    r = client.post("/console/views/", {"name": "Billing high", "query": "queue=billing&priority=high",
                                        "shared": "on"})
    assert r.status_code == 302
    client.post("/console/views/", {"name": "Mine only", "query": "queue=technical"})
    assert client.post("/console/views/", {"name": ""}).status_code == 400
    client.force_login(admin_user)
    names = [v.name for v in client.get("/console/").context["saved_views"]]
    assert names == ["Billing high"]  # the private one is not visible to others
    shared = SavedView.objects.get(name="Billing high")
    assert client.post(f"/console/views/{shared.pk}/delete/").status_code == 404
    client.force_login(operator_user)
    assert client.post(f"/console/views/{shared.pk}/delete/").status_code == 302
    assert not SavedView.objects.filter(pk=shared.pk).exists()


def test_sla_states(tickets):
    t = tickets[0]  # high priority: 4 h target
    now = t.created_at
    assert sla_state(t, now + timedelta(hours=1))[0] == "ok"
    assert sla_state(t, now + timedelta(hours=3, minutes=30))[0] == "due"
    assert sla_state(t, now + timedelta(hours=5))[0] == "breached"
    t.status = "replied"
    assert sla_state(t, timezone.now() + timedelta(days=9))[0] == "met"


def test_assets_are_served_without_a_cdn(client):
    r = client.get("/console/assets/console/vendor/htmx.min.js")
    assert r.status_code == 200 and b"htmx" in b"".join(r.streaming_content)[:5000]
    assert client.get("/console/assets/console/vendor/plotly.min.js").status_code == 200
    assert client.get("/console/assets/../settings.py").status_code == 404


def test_consumer_origin_check(settings):
    settings.ALLOWED_HOSTS = ["localhost", "console.example.com"]

    def scope(origin):
        return {"headers": [(b"origin", origin)] if origin else []}

    assert origin_allowed(scope(b"http://localhost:8000"))
    assert origin_allowed(scope(b"https://console.example.com"))
    assert not origin_allowed(scope(b"https://evil.example"))
    assert not origin_allowed(scope(b"null"))
    assert not origin_allowed(scope(None))


@pytest.mark.parametrize("url", [
    "/console/?page=-1", "/console/?page=abc", "/console/?q=" + "x" * 500, "/console/?status=%00",
    "/console/?queue=billing%27%3B--", "/console/inbox/rows/?sort=id", "/console/?intent=" + "é" * 150,
    "/console/dashboard/?range=%FF", "/console/dashboard/panels/?range=", "/console/routing/?agent=%27",
    "/console/routing/?range=1h&agent=" + "a" * 100, "/console/dashboard/export.csv?range[]=1",
    "/console/tickets/0/", "/console/tickets/99999999999999999999/", "/console/routing/steps/0/",
])
def test_bad_input_is_a_4xx_never_a_500(client, operator_user, agent_profiles, url):
    client.force_login(operator_user)
    r = client.get(url)
    assert r.status_code < 500, (url, r.status_code)
    assert r.status_code in (200, 400, 404), (url, r.status_code)
