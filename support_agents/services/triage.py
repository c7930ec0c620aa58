"""Triage: classify a new ticket, set queue/intent/priority/confidence, start the agent's run."""

from __future__ import annotations

from django.db import transaction

from support_agents.models import AgentProfile, AgentRun, Handoff, Ticket, TicketStatus
from support_agents.runner import enqueue_run, record_step, run_create, ticket_move
from support_agents.selectors.tickets import tickets_awaiting_triage
from support_agents.services.tickets import ticket_enqueue_triage

ACTOR = "system:router"


def ticket_triage(ticket_id: int) -> str:
    from support_agents.router import classify_texts

    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket_id)
        if ticket.status not in (TicketStatus.NEW, TicketStatus.RETRYING, TicketStatus.TRIAGING):
            return f"skipped ({ticket.status})"  # redelivered after it was already triaged
        if ticket.status != TicketStatus.TRIAGING:
            ticket_move(ticket, TicketStatus.TRIAGING, actor=ACTOR, reason="triage started")
    profiles = {p.slug: p for p in AgentProfile.objects.all()}
    thresholds = {slug: p.confidence_threshold for slug, p in profiles.items()}
    text = (
        f"{ticket.subject}\n{ticket.body}"
        if ticket.subject and ticket.subject not in ticket.body
        else ticket.body
    )
    c = classify_texts([text], thresholds=thresholds)[0]
    updates = {"intent": c.intent, "priority": c.priority, "confidence": c.confidence}
    agent = profiles.get(c.queue)
    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket_id)
        if ticket.status != TicketStatus.TRIAGING:
            return f"skipped ({ticket.status})"
        data = {"intent": c.intent, "confidence": round(c.confidence, 4)}
        if c.below_threshold or agent is None or not agent.enabled:
            reason = (
                f"confidence {c.confidence:.2f} below threshold"
                if c.below_threshold
                else f"agent {c.queue} unavailable"
            )
            ticket_move(
                ticket,
                TicketStatus.NEEDS_TRIAGE,
                actor=ACTOR,
                reason=reason,
                updates={**updates, "queue": "human"},
                data=data,
            )
            Handoff.objects.create(
                ticket=ticket,
                from_label="router",
                to_label="human",
                reason=reason,
                context_summary={"intent": c.intent, "confidence": c.confidence},
            )
            return "needs_triage"
        run = run_create(ticket=ticket, agent=agent, intent=c.intent)
        _record_router_step(run, c)
        Handoff.objects.create(
            ticket=ticket,
            from_label="router",
            to_agent=agent,
            to_label=agent.slug,
            reason=f"classified as {c.intent} ({c.confidence:.2f})",
            context_summary={"intent": c.intent, "confidence": c.confidence},
        )
        ticket_move(
            ticket,
            TicketStatus.QUEUED,
            actor=ACTOR,
            reason=f"routed to {agent.slug}",
            updates={**updates, "queue": agent.slug, "assigned_agent": agent},
            data=data,
        )
        enqueue_run(run)
    return agent.slug


def _record_router_step(run: AgentRun, c) -> None:
    from support_agents.inference import get_model, router_path
    from support_agents.runner import model_telemetry

    model = get_model(router_path())
    call = type(
        "Call",
        (),
        {
            "usage": c.usage,
            "routing": c.routing,
            "seconds": c.usage.wall_seconds if c.usage else 0,
            "prompt": run.ticket.body,
            "completion": "",
        },
    )()
    tel = model_telemetry(call, model)
    record_step(
        run,
        kind="model",
        name="classify",
        input={"text": run.ticket.body[:2000]},
        output={"intent": c.intent, "queue": c.queue, "confidence": c.confidence, "priority": c.priority},
        telemetry=tel,
    )


def triage_failed(ticket_id: int, reason: str) -> None:
    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket_id)
        if ticket.status in (TicketStatus.NEW, TicketStatus.TRIAGING):
            ticket_move(ticket, TicketStatus.FAILED, actor=ACTOR, reason=reason[:500])


def triage_requeue_stalled(*, older_than_s: float = 0) -> list[int]:
    """Publish triage again for the tickets that ``tickets_awaiting_triage`` finds: their message may
    have been lost, or be held by the broker for a stopped worker (Redis hands an unacknowledged
    message back only after its visibility timeout, an hour by default). A message that was not lost
    after all costs one task that finds the ticket triaged and skips it (``ticket_triage`` is
    idempotent). Returns the ids, oldest first."""
    ids = tickets_awaiting_triage(older_than_s=older_than_s)
    for pk in ids:
        ticket_enqueue_triage(pk)
    return ids
