"""Cost and performance dashboard (live) and its CSV export."""

import csv

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from .. import figures, metrics
from ..access import operator_required
from ..forms import TimeRangeForm
from ..services import price_settings
from ..timerange import since


def _aggregates(range_key: str, currency: str) -> dict:
    """Everything the panels show for one time range, computed in PostgreSQL."""
    start = since(range_key)
    agents, rates, flows, tickets = metrics.gather(
        lambda: metrics.cost_per_agent(start),
        lambda: metrics.latency_and_rates(start),
        lambda: metrics.handoff_flows(start),
        lambda: metrics.cost_per_ticket(start, limit=15),
    )
    totals = {k: sum(a[k] for a in agents) for k in ("calls", "tokens_in", "tokens_out", "flops", "dense_flops",
                                                     "device_seconds", "money")}
    totals["saving"] = metrics._saving(totals["flops"], totals["dense_flops"])
    figs = {"latency": figures.latency_figure(rates["latency"])}
    if agents:
        figs["cost"] = figures.cost_by_agent_figure(agents, currency)
    if flows:
        figs["sankey"] = figures.sankey_figure(flows, title="Ticket flow: router → agents → handoffs → outcome")
    return {"agents": agents, "tickets": tickets, "rates": rates, "totals": totals, "figs": figs,
            "generated": timezone.now()}


def _context(request: HttpRequest) -> tuple[dict, int]:
    form = TimeRangeForm(request.GET or {"range": "24h"})
    if not form.is_valid():
        return {"form": form, "nav": "dashboard", "invalid": True}, 400
    key = form.cleaned_data["range"] or "24h"
    currency = price_settings()["currency"]
    if key == "all":
        # All-time figures depend only on the data, never on the clock: reuse them until a row is
        # added (every live event this page reacts to adds one), instead of re-aggregating every
        # ticket for each viewer on each event.
        data = metrics.all_time_cache.get((metrics.data_watermark(), currency), lambda: _aggregates(key, currency))
    else:
        data = _aggregates(key, currency)
    return {"form": form, "nav": "dashboard", "range": key, "currency": currency, **data}, 200


@operator_required
def dashboard(request: HttpRequest) -> HttpResponse:
    ctx, status = _context(request)
    return render(request, "console/dashboard.html", ctx, status=status)


@operator_required
def panels(request: HttpRequest) -> HttpResponse:
    ctx, status = _context(request)
    return render(request, "console/partials/dashboard_panels.html", ctx, status=status)


@operator_required
def export_csv(request: HttpRequest) -> HttpResponse:
    """Per-ticket cost rows for the selected window (all tickets, not just the top of the page)."""
    form = TimeRangeForm(request.GET or {"range": "24h"})
    if not form.is_valid():
        return HttpResponse("; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()),
                            status=400, content_type="text/plain")
    key = form.cleaned_data["range"] or "24h"
    with metrics.analytics_transaction():
        rows = metrics.cost_per_ticket(since(key), limit=None)
    cols = ["reference", "ticket_id", "calls", "tokens_in", "tokens_out", "active_params", "total_params",
            "flops", "dense_flops", "saving", "device_seconds", "money"]
    response = HttpResponse(content_type="text/csv")
    writer = csv.writer(response)
    writer.writerow(cols)
    for r in rows:
        writer.writerow([r[c] if r[c] is not None else "" for c in cols])
    response["Content-Disposition"] = f'attachment; filename="moedesk-cost-{key}.csv"'
    return response
