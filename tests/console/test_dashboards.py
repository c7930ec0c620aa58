"""Routing views, cost/performance dashboard and CSV export: numbers come out of SQL correctly."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from support_agents.models import AuditEvent, Handoff, Message, PriceSetting, RunStep, Ticket

from .factories import model_step, routing_record, ticket_with_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def op(client, operator_user, agent_profiles):
    client.force_login(operator_user)
    return client


def _plot(html: str, element_id: str) -> dict:
    marker = f'data-plot="{element_id}">'
    start = html.index(marker) + len(marker)
    return json.loads(html[start:html.index("</script>", start)])


def test_routing_step_page_has_heatmap_token_view_and_balance(op):
    _, run = ticket_with_run()
    step = model_step(run, 0, routing=routing_record(tokens=["Hi", " there", "<b>x</b>"]))
    r = op.get(f"/console/routing/steps/{step.pk}/")
    assert r.status_code == 200
    html = r.content.decode()
    tokens = _plot(html, "token-routing")["data"][0]
    assert tokens["z"] == [[0, 1, 2], [1, 2, 3]]                     # top-1 expert per token per layer
    assert tokens["text"][0][2] == "'<b>x</b>' → E2, E3"           # hover text, JSON-escaped in the page
    assert "<b>x</b>" not in html.split('data-plot="token-routing">')[1].split("</script>")[0]
    assert _plot(html, "routing-heatmap")["data"][0]["z"] == [[1, 2, 2, 1], [1, 1, 2, 2]]
    assert "routing" in html.lower() and "topic" not in html.lower().replace("experts are not topics", "")
    tool = RunStep.objects.create(run=run, index=1, kind="tool", name="x")
    assert op.get(f"/console/routing/steps/{tool.pk}/").status_code == 404


def test_malformed_routing_record_does_not_break_pages(op):
    ticket, run = ticket_with_run()
    step = model_step(run, 0, routing={"layers": 3, "experts": 4, "expert_counts": [[1, 0, 0, 0]] * 3,
                                       "ids": [[[0]], [[1]]], "tokens": ["a", "b"]})
    r = op.get(f"/console/routing/steps/{step.pk}/")
    assert r.status_code == 200 and "unreadable" in r.content.decode()
    assert op.get(f"/console/tickets/{ticket.pk}/").status_code == 200


def test_routing_overview_sums_rollups_per_agent_and_warns_on_collapse(op, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # rollups are updated after commit
        _, run = ticket_with_run(agent="billing")
        for i in range(40):  # 40 calls x 4 tokens x top-2 = 320 routed slots per layer
            model_step(run, i, routing=routing_record(experts=16, hot=3))
        _, run2 = ticket_with_run(agent="sales", email="s@example.com")
        model_step(run2, 0, routing=routing_record())
    r = op.get("/console/routing/?agent=billing&range=24h")
    assert r.status_code == 200
    groups = r.context["groups"]
    assert len(groups) == 1 and groups[0]["calls"] == 40
    counts = groups[0]["counts"]
    assert counts[0][3] == 160 and sum(counts[0]) == 320
    assert groups[0]["warnings"] and "collapse" in groups[0]["warnings"][0]
    assert "expert collapse suspected" in r.content.decode()
    all_agents = op.get("/console/routing/?range=all").context["groups"]
    assert sum(g["calls"] for g in all_agents) == 41
    # A full rebuild from the steps (SQL over the routing JSON) gives the same numbers.
    from webapp.console.rollups import rebuild

    rebuild()
    again = op.get("/console/routing/?agent=billing&range=24h").context["groups"]
    assert again[0]["counts"] == counts and again[0]["calls"] == 40
    assert op.get("/console/routing/?agent=nope").status_code == 400
    assert op.get("/console/routing/?range=5y").status_code == 400


def test_dashboard_numbers(op):
    t1, run1 = ticket_with_run(agent="billing")
    model_step(run1, 0, prompt_tokens=100, completion_tokens=20, flops=1e9, dense_flops=4e9, cost="0.00100000")
    model_step(run1, 1, prompt_tokens=50, completion_tokens=10, flops=1e9, dense_flops=4e9, cost="0.00200000")
    t2, run2 = ticket_with_run(agent="technical", email="t@example.com")
    model_step(run2, 0, prompt_tokens=10, completion_tokens=5, flops=3e9, dense_flops=6e9, cost="0.00050000")
    Handoff.objects.create(ticket=t2, from_label="technical", to_label="billing", reason="really billing")
    Message.objects.create(ticket=t1, author_kind="agent", body="draft", is_draft=True)
    for to in ("queued", "resolved"):
        AuditEvent.objects.create(actor="system", verb="ticket.status_changed", ticket=t1, data={"to": to})
    AuditEvent.objects.create(actor="system", verb="ticket.status_changed", ticket=t2, data={"to": "escalated"})
    Ticket.objects.filter(pk=t1.pk).update(status="resolved")

    r = op.get("/console/dashboard/?range=24h")
    assert r.status_code == 200
    agents = {a["agent"]: a for a in r.context["agents"]}
    assert agents["billing"]["tokens_in"] == 150 and agents["billing"]["tokens_out"] == 30
    assert agents["billing"]["saving"] == pytest.approx(0.75)
    assert agents["billing"]["money"] == pytest.approx(0.003)
    assert agents["technical"]["saving"] == pytest.approx(0.5)
    totals = r.context["totals"]
    assert totals["calls"] == 3 and totals["flops"] == pytest.approx(5e9)
    rates = r.context["rates"]
    assert rates["tickets"] == 2 and rates["resolution_rate"] == 0.5 and rates["escalation_rate"] == 0.5
    assert rates["samples"] == {"triage": 1, "first draft": 1, "resolution": 1}
    assert rates["latency"]["triage"]["p50"] is not None and rates["latency"]["triage"]["p50"] >= 0
    flows = set(_plot(r.content.decode(), "sankey-fig")["data"][0]["node"]["label"])
    assert {"router", "billing", "technical", "billing (hop 2)", "resolved", "open"} <= flows
    html = r.content.decode()
    for fig in ("latency-fig", "cost-fig", "sankey-fig"):
        assert f'data-plot="{fig}"' in html
    # Money is labelled with the configured currency; its axis is linear although FLOPs are on a log axis.
    for device in ("gpu", "cpu"):
        PriceSetting.objects.update_or_create(device=device, defaults={"price_per_hour": "0.5", "currency": "EUR"})
    html = op.get("/console/dashboard/?range=24h").content.decode()
    money_axis = _plot(html, "cost-fig")["layout"]["yaxis2"]
    assert money_axis["type"] == "linear" and money_axis["tickmode"] == "auto" and money_axis["title"]["text"] == "money (EUR)"
    assert "0.0035 EUR</b> spent" in html and "<th>money (EUR)</th>" in html
    # Older tickets drop out of a shorter window.
    Ticket.objects.filter(pk=t2.pk).update(created_at=timezone.now() - timedelta(hours=3))
    assert op.get("/console/dashboard/panels/?range=1h").context["rates"]["tickets"] == 1
    assert op.get("/console/dashboard/?range=forever").status_code == 400


def test_all_time_dashboard_is_reused_until_new_rows_arrive(op):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from webapp.console.metrics import all_time_cache

    all_time_cache.clear()
    t1, run1 = ticket_with_run(agent="billing")
    model_step(run1, 0, prompt_tokens=100, completion_tokens=20)
    first = op.get("/console/dashboard/?range=all")
    assert first.context["totals"]["calls"] == 1 and first.context["rates"]["tickets"] == 1

    with CaptureQueriesContext(connection) as again:
        second = op.get("/console/dashboard/?range=all")
    sqls = " ".join(q["sql"] for q in again.captured_queries)
    assert "percentile_cont" not in sqls and "support_agents_runstep" in sqls  # watermark only
    assert second.context["totals"] == first.context["totals"]

    model_step(run1, 1, prompt_tokens=7, completion_tokens=3)                  # a new model call...
    third = op.get("/console/dashboard/?range=all")
    assert third.context["totals"]["calls"] == 2 and third.context["totals"]["tokens_in"] == 107  # ...shows
    t2, _ = ticket_with_run(agent="technical", email="t@example.com")          # and so does a new ticket
    assert op.get("/console/dashboard/?range=all").context["rates"]["tickets"] == 2


def test_csv_export(op):
    t1, run1 = ticket_with_run()
    model_step(run1, 0, prompt_tokens=7, completion_tokens=3, flops=1e9, dense_flops=2e9, cost="0.00000500")
    r = op.get("/console/dashboard/export.csv?range=all")
    assert r.status_code == 200 and r["Content-Type"] == "text/csv"
    assert "attachment" in r["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert len(rows) == 1
    row = rows[0]
    assert row["reference"] == t1.reference and row["tokens_in"] == "7" and row["tokens_out"] == "3"
    assert float(row["saving"]) == pytest.approx(0.5) and float(row["money"]) == pytest.approx(0.000005)
    assert op.get("/console/dashboard/export.csv?range=bad").status_code == 400


def test_sankey_path_continues_through_operator_reassignment(agent_profiles):
    from webapp.console.metrics import handoff_flows

    t, _ = ticket_with_run(agent="billing")
    Handoff.objects.filter(ticket=t).update(to_label="human", to_agent=None)   # router sent it to a human
    Handoff.objects.create(ticket=t, from_label="user:operator", to_label="billing", reason="reassigned")
    assert sorted(handoff_flows(None)) == [("billing (hop 2)", "open", 1), ("human", "billing (hop 2)", 1),
                                           ("router", "human", 1)]


@pytest.mark.django_db(transaction=True)
def test_aggregates_run_at_once_on_their_own_connections_outside_a_transaction(client, operator_user,
                                                                                agent_profiles):
    import threading

    from django.db import transaction

    from webapp.console import metrics

    t1, run1 = ticket_with_run(agent="billing")
    model_step(run1, 0, prompt_tokens=100, completion_tokens=20, flops=1e9, dense_flops=4e9, cost="0.00100000")
    t2, run2 = ticket_with_run(agent="technical", email="t@example.com")
    model_step(run2, 0, prompt_tokens=10, completion_tokens=5, flops=3e9, dense_flops=6e9, cost="0.00050000")
    AuditEvent.objects.create(actor="system", verb="ticket.status_changed", ticket=t1, data={"to": "resolved"})

    where: list[str] = []

    def per_agent():
        where.append(threading.current_thread().name)
        return metrics.cost_per_agent(None)

    calls = (per_agent, lambda: metrics.latency_and_rates(None), lambda: metrics.handoff_flows(None),
             lambda: metrics.cost_per_ticket(None))
    concurrent = metrics.gather(*calls)
    assert where[-1].startswith("analytics")  # committed data, no open transaction: other threads
    with transaction.atomic():
        in_order = metrics.gather(*calls)
    assert where[-1] == threading.current_thread().name  # inside a transaction: this connection
    assert concurrent == in_order
    assert {a["agent"]: a["tokens_in"] for a in concurrent[0]} == {"billing": 100, "technical": 10}

    client.force_login(operator_user)
    r = client.get("/console/dashboard/?range=24h")
    assert r.status_code == 200 and r.context["totals"]["calls"] == 2 and r.context["rates"]["tickets"] == 2


def test_money_keeps_significant_digits_of_tiny_amounts():
    from webapp.console.templatetags.console import money

    assert money(1.18123e-05) == "0.0000118" and money("0.00350000") == "0.0035"
    assert money(1234.5) == "1,234.50" and money(0) == "0" and money(None) == "–"
