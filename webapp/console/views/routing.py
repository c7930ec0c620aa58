"""Expert-routing views: one model call in detail, and aggregated usage per agent and window."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from support_agents.models import AgentProfile, RunStep

from .. import figures, routing_data
from ..access import operator_required
from ..forms import TimeRangeForm
from ..timerange import since


@operator_required
def step(request: HttpRequest, step_id: int) -> HttpResponse:
    step = get_object_or_404(RunStep.objects.select_related("run__ticket", "run__agent"), pk=step_id,
                             kind=RunStep.Kind.MODEL)
    try:
        figs = routing_data.step_figures(step.routing or {}, label=step.name)
        error = ""
    except ValueError as exc:  # a malformed record must not take the page down
        figs, error = {}, str(exc)
    counts = (step.routing or {}).get("expert_counts") or []
    stats, warnings = routing_data.balance(counts, min_tokens=1) if counts else ({}, [])
    if stats.get("balancedness"):
        figs["balance"] = figures.routing_balance_figure(stats, title="Routing balance per layer (this call)")
    return render(request, "console/routing_step.html", {
        "nav": "routing", "step": step, "figs": figs, "error": error, "warnings": warnings,
        "tokens": (step.routing or {}).get("tokens") or [],
    })


@operator_required
def overview(request: HttpRequest) -> HttpResponse:
    form = TimeRangeForm(request.GET or {"range": "24h"})
    agents = list(AgentProfile.objects.all())
    if not form.is_valid():
        return render(request, "console/routing.html", {"nav": "routing", "form": form, "agents": agents,
                                                         "groups": []}, status=400)
    slug = form.cleaned_data["agent"]
    agent = next((a for a in agents if a.slug == slug), None)
    if slug and agent is None:
        form.add_error("agent", f"unknown agent {slug!r}")
        return render(request, "console/routing.html", {"nav": "routing", "form": form, "agents": agents,
                                                         "groups": []}, status=400)
    groups = routing_data.routing_usage(agent_id=agent.pk if agent else None,
                                        since=since(form.cleaned_data["range"]))
    for i, g in enumerate(groups):
        g["stats"], g["warnings"] = routing_data.balance(g["counts"])
        g["usage_fig"] = figures.routing_usage_figure(
            g["counts"], title=f"Routing usage · {g['name']} · {g['calls']} calls")
        g["balance_fig"] = figures.routing_balance_figure(g["stats"])
        g["i"] = i
        g["layers"] = list(zip(range(len(g["counts"])), g["stats"]["balancedness"], g["stats"]["cv"],
                               g["stats"]["entropy"], strict=True))
    return render(request, "console/routing.html", {
        "nav": "routing", "form": form, "agents": agents, "agent": agent, "groups": groups,
        "recent": RunStep.objects.filter(kind=RunStep.Kind.MODEL).exclude(routing={})
        .select_related("run__ticket", "run__agent").defer("routing", "input", "output").order_by("-id")[:15],
    })
