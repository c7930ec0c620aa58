from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from support_agents.models import Message, Ticket, TicketStatus


def ticket_list(
    *,
    status: list[str] | None = None,
    queue: str | None = None,
    priority: str | None = None,
    channel: str | None = None,
    intent: str | None = None,
    customer_email: str | None = None,
    q: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Ticket]:
    """Tickets newest first, filtered; the (status|queue, created_at) indexes serve these filters."""
    qs = Ticket.objects.select_related("customer", "assigned_agent")
    if status:
        qs = qs.filter(status__in=status)
    if queue is not None:
        qs = qs.filter(queue=queue)
    if priority:
        qs = qs.filter(priority=priority)
    if channel:
        qs = qs.filter(channel=channel)
    if intent:
        qs = qs.filter(intent=intent)
    if customer_email:
        qs = qs.filter(customer__email=customer_email.strip().lower())
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    if q:
        ticket_id = Ticket.id_from_reference(q) if q.strip().upper().startswith("TCK-") else None
        if ticket_id is not None:
            qs = qs.filter(pk=ticket_id)
        else:
            qs = qs.filter(Q(subject__icontains=q) | Q(body__icontains=q) | Q(customer__email__icontains=q))
    return qs.order_by("-created_at", "-id")


def ticket_get_by_reference(reference: str) -> Ticket | None:
    ticket_id = Ticket.id_from_reference(reference)
    if ticket_id is None:
        return None
    return Ticket.objects.select_related("customer", "assigned_agent").filter(pk=ticket_id).first()


def ticket_messages(ticket: Ticket, *, include_internal: bool = True) -> QuerySet[Message]:
    qs = ticket.messages.all()
    if not include_internal:
        qs = qs.filter(is_internal=False)
    return qs.order_by("created_at", "id")


def tickets_awaiting_triage(*, older_than_s: float = 0) -> list[int]:
    """Ids of tickets, oldest first, unchanged for ``older_than_s`` seconds, that still wait for
    triage: ``new`` ones, and ``triaging`` ones whose worker may have stopped mid-triage."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    return list(
        Ticket.objects.filter(status__in=(TicketStatus.NEW, TicketStatus.TRIAGING), updated_at__lte=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
