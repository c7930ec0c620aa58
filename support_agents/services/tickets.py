"""Ticket life cycle. Status changes go through `ticket_transition` only."""

import functools
import importlib.util
import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction

from support_agents.events import publish_event
from support_agents.models import (
    ALLOWED_TRANSITIONS,
    AuditEvent,
    AuthorKind,
    Channel,
    Customer,
    IntakeSource,
    Message,
    Ticket,
    TicketStatus,
)
from support_agents.services import rows
from support_agents.services.audit import actor_for_user, audit_log

log = logging.getLogger("moedesk.tickets")

# Fields a transition may set together with the status (e.g. triage sets queue + intent).
TRANSITION_FIELDS = frozenset(
    {"queue", "intent", "priority", "confidence", "assigned_agent", "assigned_agent_id"}
)


class InvalidTransition(Exception):
    def __init__(self, from_status: str, to_status: str) -> None:
        from_status, to_status = str(from_status), str(to_status)
        self.from_status = from_status
        self.to_status = to_status
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS.get(from_status, ()))) or "none"
        super().__init__(f"ticket cannot go from {from_status!r} to {to_status!r} (allowed: {allowed})")


def ticket_event_data(ticket: Ticket) -> dict[str, Any]:
    """What live events carry about a ticket: identifiers and routing, no customer PII."""
    return {
        "reference": ticket.reference,
        "status": ticket.status,
        "queue": ticket.queue,
        "intent": ticket.intent,
        "priority": ticket.priority,
        "confidence": ticket.confidence,
        "assigned_agent_id": ticket.assigned_agent_id,
    }


_CUSTOMER_FIELDS = ("id", "email", "name", "external_id", "created_at")


@functools.cache
def _customer_sql() -> str:
    # One statement: the existing row, or a new one. The INSERT's SELECT yields no row when the
    # customer exists, so no identity value is burnt per ticket; ON CONFLICT covers a concurrent insert.
    c = rows.table(Customer)
    cols = ", ".join(rows.quote(f) for f in _CUSTOMER_FIELDS)
    new_cols = ", ".join(rows.quote(f) for f in _CUSTOMER_FIELDS[1:])
    return (
        f"WITH found AS (SELECT {cols} FROM {c} WHERE {rows.quote('email')} = %s), "
        f"ins AS (INSERT INTO {c} ({new_cols}) SELECT %s, %s, %s, %s "
        f"WHERE NOT EXISTS (SELECT 1 FROM found) ON CONFLICT ({rows.quote('email')}) DO NOTHING "
        f"RETURNING {cols}) "
        f"SELECT {cols}, false FROM found UNION ALL SELECT {cols}, true FROM ins"
    )


def customer_get_or_create(*, email: str, name: str = "", external_id: str = "") -> Customer:
    """The customer with this (lower-cased) email, created if new; fills a blank name/external id."""
    email = email.strip().lower()
    name, external_id = name.strip(), external_id.strip()
    created_at = Customer._meta.get_field("created_at").pre_save(Customer(), add=True)
    row = rows.fetch_one(_customer_sql(), [email, email, name, external_id, created_at])
    if row is None:
        # A concurrent transaction inserted this email after our statement's snapshot was taken:
        # ON CONFLICT waited for it, and a new statement sees it.
        customer = Customer.objects.get(email=email)
        created = False
    else:
        customer = Customer.from_db(connection.alias, _CUSTOMER_FIELDS, row[:-1])
        created = row[-1]
    if not created:
        changed = []
        if name and not customer.name:
            customer.name, changed = name, [*changed, "name"]
        if external_id and not customer.external_id:
            customer.external_id, changed = external_id, [*changed, "external_id"]
        if changed:
            customer.save(update_fields=changed)
    return customer


def _subject_from_body(body: str) -> str:
    first = body.strip().splitlines()[0] if body.strip() else ""
    return first[:77] + "..." if len(first) > 80 else first


def ticket_enqueue_triage(ticket_id: int) -> None:
    # The triage task belongs to the pipeline; intake must keep working before it exists.
    if importlib.util.find_spec("support_agents.tasks") is None:
        log.info("no triage task module yet; ticket left new", extra={"ticket_id": ticket_id})
        return
    try:
        from support_agents import tasks

        task = getattr(tasks, "triage_ticket", None)
        if task is None:
            log.info("no triage_ticket task yet; ticket left new", extra={"ticket_id": ticket_id})
            return
        # Nothing reads triage results: without ignore_result, each publish also subscribes the
        # web process to the result key in Redis (and the worker stores a result nobody fetches).
        task.apply_async((ticket_id,), ignore_result=True)
    except Exception:
        # The ticket is committed; `manage.py requeue_new` picks up tickets whose enqueue failed.
        log.exception("triage enqueue failed", extra={"ticket_id": ticket_id})


@functools.cache
def _ticket_create_sql(
    ticket_cols: tuple[str, ...], message_cols: tuple[str, ...], audit_cols: tuple[str, ...]
) -> str:
    """Ticket + first message + audit record in one statement (one round trip, no ORM compile)."""

    def values(n: int) -> str:
        return ", ".join(["%s"] * n)

    ticket_fk = rows.quote("ticket_id")
    pk = rows.quote("id")
    return (
        f"WITH t AS (INSERT INTO {rows.table(Ticket)} ({', '.join(ticket_cols)}) "
        f"VALUES ({values(len(ticket_cols))}) RETURNING {pk}), "
        f"m AS (INSERT INTO {rows.table(Message)} ({ticket_fk}, {', '.join(message_cols)}) "
        f"SELECT t.{pk}, {values(len(message_cols))} FROM t), "
        f"a AS (INSERT INTO {rows.table(AuditEvent)} ({ticket_fk}, {', '.join(audit_cols)}) "
        f"SELECT t.{pk}, {values(len(audit_cols))} FROM t) "
        f"SELECT {pk} FROM t"
    )


def ticket_create(
    *,
    customer: Customer,
    subject: str,
    body: str,
    channel: str = Channel.WEB,
    metadata: dict[str, Any] | None = None,
    source: IntakeSource | None = None,
    ticket_id: int | None = None,
) -> Ticket:
    """Create the ticket, its first customer message and an audit record; triage starts after commit.

    `ticket_id` is an id already drawn from the ticket sequence (intake reserves it in the same
    statement that records the delivery, so that row needs no second write); normally leave it None.
    """
    ticket = Ticket(
        id=ticket_id,
        customer=customer,
        subject=(subject or "").strip() or _subject_from_body(body),
        body=body,
        channel=channel,
        metadata=metadata or {},
        source=source,
    )
    message = Message(author_kind=AuthorKind.CUSTOMER, author_name=customer.name or "", body=body)
    # The audit record is written in the same statement as the ticket (what audit_log would insert).
    audit = AuditEvent(
        actor=f"intake:{source.name}" if source else "system",
        verb="ticket.created",
        data={"channel": channel, "source": source.name if source else None},
    )
    ticket_cols, ticket_values = rows.insert_values(ticket)
    message_cols, message_values = rows.insert_values(message, skip=("id", "ticket_id"))
    audit_cols, audit_values = rows.insert_values(audit, skip=("id", "ticket_id"))
    # No savepoint: a failure here must roll back the caller's transaction anyway (intake's event row).
    with transaction.atomic(savepoint=False):
        (new_id,) = rows.fetch_one(
            _ticket_create_sql(ticket_cols, message_cols, audit_cols),
            [*ticket_values, *message_values, *audit_values],
        )
        rows.mark_saved(ticket, new_id)
        # Nobody can be watching a ticket that does not exist yet: the inbox is enough.
        publish_event("ticket.created", ticket_id=ticket.pk, data=ticket_event_data(ticket), inbox_only=True)
        transaction.on_commit(lambda: ticket_enqueue_triage(new_id))
    return ticket


def ticket_transition(
    ticket: Ticket,
    to_status: str,
    *,
    actor: str,
    reason: str = "",
    data: dict[str, Any] | None = None,
    updates: dict[str, Any] | None = None,
) -> Ticket:
    """Move `ticket` to `to_status` if ALLOWED_TRANSITIONS permits it.

    Locks the row, so two workers cannot both act on the same old status. `updates` may set
    queue/intent/priority/confidence/assigned_agent in the same write. The passed instance is
    refreshed with the new values.
    """
    to_status = TicketStatus(to_status).value
    updates = updates or {}
    unknown = set(updates) - TRANSITION_FIELDS
    if unknown:
        raise ValueError(f"ticket_transition cannot set {sorted(unknown)}")
    with transaction.atomic():
        locked = Ticket.objects.select_for_update().get(pk=ticket.pk)
        from_status = locked.status
        if to_status not in ALLOWED_TRANSITIONS[from_status]:
            raise InvalidTransition(from_status, to_status)
        locked.status = to_status
        locked.status_reason = reason[:500]
        for field, value in updates.items():
            setattr(locked, field, value)
        locked.save(
            update_fields=["status", "status_reason", "updated_at", *{f.removesuffix("_id") for f in updates}]
        )
        audit_log(
            actor=actor,
            verb="ticket.status_changed",
            ticket=locked,
            data={
                "from": from_status,
                "to": to_status,
                "reason": reason,
                **({"updates": {k: _jsonable(v) for k, v in updates.items()}} if updates else {}),
                **(data or {}),
            },
        )
        publish_event(
            "ticket.status",
            ticket_id=locked.pk,
            data={**ticket_event_data(locked), "from": from_status, "reason": reason},
        )
    for field in ("status", "status_reason", "updated_at", *{f.removesuffix("_id") for f in updates}):
        setattr(ticket, field, getattr(locked, field))
    return ticket


def _jsonable(value: Any) -> Any:
    return value.pk if hasattr(value, "pk") else value


def message_create(
    *,
    ticket: Ticket,
    author_kind: str,
    body: str,
    actor: str,
    author_name: str = "",
    author_user: AbstractBaseUser | None = None,
    is_internal: bool = False,
    is_draft: bool = False,
    data: dict[str, Any] | None = None,
) -> Message:
    with transaction.atomic():
        message = Message.objects.create(
            ticket=ticket,
            author_kind=author_kind,
            author_name=author_name,
            author_user=author_user,
            body=body,
            is_internal=is_internal,
            is_draft=is_draft,
            data=data or {},
        )
        audit_log(
            actor=actor,
            verb="message.created",
            ticket=ticket,
            data={
                "message_id": message.pk,
                "author_kind": author_kind,
                "internal": is_internal,
                "draft": is_draft,
            },
        )
        publish_event(
            "message.created",
            ticket_id=ticket.pk,
            data={
                "reference": ticket.reference,
                "message_id": message.pk,
                "author_kind": author_kind,
                "is_internal": is_internal,
                "is_draft": is_draft,
            },
        )
    return message


def operator_message_post(*, ticket: Ticket, user: AbstractBaseUser, body: str, is_internal: bool) -> Message:
    """An operator's reply or internal note, as posted from the console or the REST API."""
    return message_create(
        ticket=ticket,
        author_kind=AuthorKind.OPERATOR,
        author_name=user.get_full_name() or user.get_username(),
        author_user=user,
        body=body,
        is_internal=is_internal,
        actor=actor_for_user(user),
    )
