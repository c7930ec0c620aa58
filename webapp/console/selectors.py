"""Read-side queries for the console. Filtering, counting and aggregation happen in SQL."""

from __future__ import annotations

import functools
import json
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When
from django.utils import timezone

from support_agents.models import Ticket, TicketStatus

from .forms import OPEN

CLOSED_STATUSES = (TicketStatus.RESOLVED,)
# Customer-facing response targets per priority; a ticket is in breach once past its target and
# not yet replied/resolved.
SLA = {"urgent": timedelta(hours=1), "high": timedelta(hours=4), "normal": timedelta(hours=24),
       "low": timedelta(hours=72)}
SLA_STOPPED = {TicketStatus.REPLIED, TicketStatus.RESOLVED}
# Mirrored by the console_ticket_priority_rank index (migration console 0003): keep them identical.
PRIORITY_RANK = Case(
    When(priority="urgent", then=Value(0)), When(priority="high", then=Value(1)),
    When(priority="normal", then=Value(2)), default=Value(3), output_field=IntegerField(),
)


INBOX_ROW_FIELDS = ("id", "subject", "body", "status", "queue", "intent", "confidence", "priority", "created_at",
                    "updated_at", "customer__name", "customer__email", "assigned_agent__slug")


def inbox_tickets(*, q: str = "", status: str = OPEN, queue: str = "", priority: str = "", intent: str = "",
                  sort: str = "-created_at") -> QuerySet[Ticket]:
    # Only what a row shows: the agent profile's prompt/settings and the ticket's metadata would
    # otherwise ride along through every sort and page.
    qs = Ticket.objects.select_related("customer", "assigned_agent").only(*INBOX_ROW_FIELDS)
    if status == OPEN:
        qs = qs.exclude(status__in=CLOSED_STATUSES)
    elif status:
        qs = qs.filter(status=status)
    if queue == "none":
        qs = qs.filter(queue="")
    elif queue:
        qs = qs.filter(queue=queue)
    if priority:
        qs = qs.filter(priority=priority)
    if intent:
        qs = qs.filter(intent=intent)
    if q:
        ticket_id = Ticket.id_from_reference(q)
        if ticket_id is not None:
            qs = qs.filter(pk=ticket_id)
        else:
            qs = qs.filter(Q(subject__icontains=q) | Q(body__icontains=q) | Q(customer__email__icontains=q)
                           | Q(customer__name__icontains=q))
    if sort == "priority":
        return qs.annotate(priority_rank=PRIORITY_RANK).order_by("priority_rank", "-created_at", "-id")
    if sort in ("created_at", "-updated_at"):
        return qs.order_by(sort, "-id" if sort.startswith("-") else "id")
    return qs.order_by("-created_at", "-id")


def queue_counts() -> dict[str, int]:
    """Open tickets per queue ("" = not yet routed) plus awaiting-approval and total, in one query."""
    rows = (Ticket.objects.exclude(status__in=CLOSED_STATUSES).values("queue")
            .annotate(n=Count("id")).order_by())
    counts = {row["queue"]: row["n"] for row in rows}
    counts["_total"] = sum(counts.values())
    counts["_approval"] = Ticket.objects.filter(status=TicketStatus.AWAITING_APPROVAL).count()
    return counts


def sla_state(ticket: Ticket, now: datetime | None = None) -> tuple[str, timedelta]:
    """("ok" | "due" | "breached" | "met", time left (negative when breached))."""
    now = now or timezone.now()
    left = ticket.created_at + SLA.get(ticket.priority, SLA["normal"]) - now
    if ticket.status in SLA_STOPPED:
        return "met", left
    if left < timedelta(0):
        return "breached", left
    if left < SLA.get(ticket.priority, SLA["normal"]) / 4:
        return "due", left
    return "ok", left


@functools.cache
def known_intents() -> list[str]:
    """Intents the router can produce (the shipped Banking77 label map)."""
    path = Path(settings.BASE_DIR) / "data" / "banking77" / "queues.json"
    try:
        return sorted(json.loads(path.read_text()))
    except (OSError, ValueError):
        return []


def ticket_activity(ticket: Ticket) -> dict:
    """Runs with their steps, the handoff path and the newest model call that has routing data."""
    from support_agents.models import AgentRun, Handoff, RunStep

    runs = list(AgentRun.objects.filter(ticket=ticket).select_related("agent", "profile_version")
                .order_by("created_at", "id"))
    steps = list(RunStep.objects.filter(run__ticket=ticket).defer("routing").order_by("run_id", "index"))
    by_run: dict[int, list] = {}
    for step in steps:
        step.input_json = json.dumps(step.input, indent=1, default=str)[:4000] if step.input else ""
        step.output_json = json.dumps(step.output, indent=1, default=str)[:4000] if step.output else ""
        by_run.setdefault(step.run_id, []).append(step)
    for run in runs:
        run.step_list = by_run.get(run.pk, [])
    handoffs = list(Handoff.objects.filter(ticket=ticket).order_by("at", "id"))
    path = [handoffs[0].from_label] if handoffs else []
    for h in handoffs:
        if path and path[-1] != h.from_label:
            path.append(h.from_label)
        path.append(h.to_label)
        h.summary_json = json.dumps(h.context_summary, indent=1, default=str) if h.context_summary else ""
    latest_routed = (RunStep.objects.filter(run__ticket=ticket, kind=RunStep.Kind.MODEL)
                     .exclude(routing={}).order_by("-created_at", "-id").only("id", "name", "routing").first())
    return {"runs": runs, "handoffs": handoffs, "path": path, "routed_step": latest_routed}
