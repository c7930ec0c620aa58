"""Intake webhook: authenticate, validate, de-duplicate and turn a delivery into a ticket."""

import functools
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from support_agents.models import Channel, InboundEvent, InboundOutcome, IntakeSource, Ticket
from support_agents.services import rows, webhooks
from support_agents.services.audit import audit_log
from support_agents.services.tickets import customer_get_or_create, ticket_create

log = logging.getLogger("moedesk.intake")

MAX_EVENT_ID = 255
MAX_METADATA_DEPTH = 20


@dataclass
class TicketPayload:
    email: str
    name: str
    external_id: str
    subject: str
    body: str
    channel: str
    metadata: dict[str, Any]


@dataclass
class IntakeResult:
    status_code: int
    body: dict[str, Any]
    ticket: Ticket | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)


@functools.cache
def _source_sql() -> str:
    fields = ("id", "name", "secrets")
    return (
        f"SELECT {', '.join(rows.quote(f) for f in fields)} FROM {rows.table(IntakeSource)} "
        f"WHERE {rows.quote('name')} = %s AND {rows.quote('enabled')}"
    )


def intake_source_get(name: str) -> IntakeSource | None:
    """An enabled source by name, or None (unknown and disabled look the same to callers).

    Read on every delivery (a disabled source or a revoked secret takes effect at once), in plain SQL:
    the ORM query cost ten times the CPU of the lookup itself.
    """
    if len(name) > IntakeSource._meta.get_field("name").max_length or not _storable(name):
        return None  # cannot name a source (and PostgreSQL text cannot carry NUL)
    row = rows.fetch_one(_source_sql(), [name])
    if row is None:
        return None
    source_id, source_name, secrets = row
    # Django's adapters hand jsonb over as text; the field decodes it. `enabled` is known from WHERE.
    secrets = IntakeSource._meta.get_field("secrets").from_db_value(secrets, None, connection)
    return IntakeSource.from_db(
        connection.alias, ("id", "name", "secrets", "enabled"), (source_id, source_name, secrets, True)
    )


def intake_reject(source: IntakeSource, reason: str) -> None:
    # Bad signatures store nothing but a counter: no body, no headers, no PII.
    IntakeSource.objects.filter(pk=source.pk).update(
        rejected_count=F("rejected_count") + 1, last_rejected_at=timezone.now()
    )
    log.warning("intake delivery rejected", extra={"source": source.name, "reason": reason})


def _storable(value: str) -> bool:
    # PostgreSQL text cannot hold NUL and psycopg cannot encode lone surrogates.
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_json_value(value: Any, path: str, errors: dict[str, list[str]], depth: int = 0) -> None:
    if depth > MAX_METADATA_DEPTH:
        errors.setdefault(path, []).append(f"nested deeper than {MAX_METADATA_DEPTH} levels")
    elif isinstance(value, str):
        if not _storable(value):
            errors.setdefault(path, []).append("contains NUL or invalid unicode")
    elif isinstance(value, float):
        if not math.isfinite(value):
            errors.setdefault(path, []).append("number out of range")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _storable(key):
                errors.setdefault(path, []).append("key contains NUL or invalid unicode")
            else:
                _check_json_value(item, f"{path}.{key}", errors, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_value(item, f"{path}[{i}]", errors, depth + 1)


def _text(
    data: dict[str, Any],
    key: str,
    path: str,
    errors: dict[str, list[str]],
    *,
    required: bool,
    max_length: int,
) -> str:
    value = data.get(key)
    if value is None:
        if required:
            errors.setdefault(path, []).append("this field is required")
        return ""
    if not isinstance(value, str):
        errors.setdefault(path, []).append("must be a string")
        return ""
    if not _storable(value):
        errors.setdefault(path, []).append("contains NUL or invalid unicode")
        return ""
    if required and not value.strip():
        errors.setdefault(path, []).append("must not be blank")
    if len(value) > max_length:
        errors.setdefault(path, []).append(f"at most {max_length} characters")
    return value


def parse_ticket_payload(raw: bytes) -> tuple[TicketPayload | None, dict[str, list[str]]]:
    """Decode and validate a delivery body; returns (payload, {}) or (None, field errors)."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, {"body": [f"invalid JSON: {type(exc).__name__}"]}
    if not isinstance(data, dict):
        return None, {"body": ["must be a JSON object"]}
    errors: dict[str, list[str]] = {}
    customer = data.get("customer")
    email = name = external_id = ""
    if not isinstance(customer, dict):
        errors["customer"] = ["this field is required" if customer is None else "must be an object"]
    else:
        email = _text(customer, "email", "customer.email", errors, required=True, max_length=254)
        if email and "customer.email" not in errors:
            try:
                validate_email(email.strip())
            except ValidationError:
                errors["customer.email"] = ["enter a valid email address"]
        name = _text(customer, "name", "customer.name", errors, required=False, max_length=200)
        ext = customer.get("external_id")
        if isinstance(ext, int) and not isinstance(ext, bool):
            customer = {**customer, "external_id": str(ext)}
        external_id = _text(
            customer, "external_id", "customer.external_id", errors, required=False, max_length=200
        )
    subject = _text(data, "subject", "subject", errors, required=False, max_length=300)
    body = _text(data, "body", "body", errors, required=True, max_length=settings.INTAKE_MAX_BODY_BYTES)
    channel = data.get("channel", Channel.WEB)
    if channel is None:
        channel = Channel.WEB
    if channel not in Channel.values:
        errors["channel"] = [f"must be one of {', '.join(Channel.values)}"]
    metadata = data.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        errors["metadata"] = ["must be an object"]
    else:
        _check_json_value(metadata, "metadata", errors)
    if errors:
        return None, errors
    return TicketPayload(email.strip(), name, external_id, subject, body, channel, metadata), {}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _answer_for_existing(event: InboundEvent) -> IntakeResult:
    if event.outcome == InboundOutcome.ACCEPTED and event.ticket is not None:
        ticket = event.ticket
        return IntakeResult(
            200, {"ticket": ticket.reference, "status": ticket.status, "duplicate": True}, ticket
        )
    errors = event.errors or {"body": ["rejected earlier"]}
    return IntakeResult(
        400, {"detail": "invalid payload", "errors": errors, "duplicate": True}, errors=errors
    )


@functools.cache
def _event_insert_sql(columns: tuple[str, ...], reserve_ticket: bool) -> str:
    table = rows.table(InboundEvent)
    ticket_fk = rows.quote("ticket_id")
    # The accepted delivery's ticket id is drawn here, so the event row is written once, complete
    # (the ticket follows in the same transaction; the foreign key is checked at commit).
    ticket = f"nextval(pg_get_serial_sequence('{Ticket._meta.db_table}', 'id'))" if reserve_ticket else "NULL"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}, {ticket_fk}) VALUES ({', '.join(['%s'] * len(columns))}, "
        f"{ticket}) ON CONFLICT ({rows.quote('source_id')}, {rows.quote('event_id')}) DO NOTHING "
        f"RETURNING {ticket_fk}"
    )


def _record_event(event: InboundEvent, *, reserve_ticket: bool) -> tuple[bool, int | None]:
    """Insert the delivery's row: (inserted, reserved ticket id), or (False, None) for a duplicate.

    A concurrent delivery with the same id blocks on the unique index until the other transaction
    ends; if that one committed, nothing is inserted here.
    """
    columns, values = rows.insert_values(event, skip=("id", "ticket_id"))
    row = rows.fetch_one(_event_insert_sql(columns, reserve_ticket), values)
    return (False, None) if row is None else (True, row[0])


def intake_receive(*, source: IntakeSource, event_id: str, raw: bytes) -> IntakeResult:
    """Handle an authenticated delivery exactly once per (source, webhook-id).

    The InboundEvent row is inserted first: a concurrent duplicate blocks on the unique index
    until this transaction ends, then inserts nothing and answers with what this one stored.
    """
    if len(event_id) > MAX_EVENT_ID or not event_id.isprintable():
        errors = {"webhook-id": [f"must be 1-{MAX_EVENT_ID} printable characters"]}
        return IntakeResult(400, {"detail": "invalid webhook-id", "errors": errors}, errors=errors)
    payload, errors = parse_ticket_payload(raw)
    # Stored bodies are valid UTF-8 text (a parse error of the encoding is never stored).
    raw_text = raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    event = InboundEvent(
        source=source,
        event_id=event_id,
        raw_body=raw_text,
        outcome=InboundOutcome.INVALID if errors else InboundOutcome.ACCEPTED,
        errors=errors,
    )
    for _attempt in range(3):
        with transaction.atomic():
            inserted, ticket_id = _record_event(event, reserve_ticket=not errors)
            if not inserted:
                existing = (
                    InboundEvent.objects.select_related("ticket")
                    .filter(source=source, event_id=event_id)
                    .first()
                )
                if existing is None:  # the earlier delivery's row was deleted meanwhile: try again
                    continue
                log.info("duplicate delivery", extra={"source": source.name, "event_id": event_id})
                return _answer_for_existing(existing)
            if errors:
                result = IntakeResult(400, {"detail": "invalid payload", "errors": errors}, errors=errors)
            else:
                customer = customer_get_or_create(
                    email=payload.email, name=payload.name, external_id=payload.external_id
                )
                ticket = ticket_create(
                    customer=customer,
                    subject=payload.subject,
                    body=payload.body,
                    channel=payload.channel,
                    metadata=payload.metadata,
                    source=source,
                    ticket_id=ticket_id,
                )
                result = IntakeResult(202, {"ticket": ticket.reference, "status": ticket.status}, ticket)
        break
    else:
        raise RuntimeError("delivery row vanished three times in a row")
    if result.ticket is not None:
        log.info(
            "ticket accepted",
            extra={"source": source.name, "event_id": event_id, "ticket": result.ticket.reference},
        )
    else:
        log.info(
            "invalid payload", extra={"source": source.name, "event_id": event_id, "fields": sorted(errors)}
        )
    return result


def intake_source_create(*, name: str, actor: str = "system") -> tuple[IntakeSource, str]:
    secret = webhooks.generate_secret()
    with transaction.atomic():
        source = IntakeSource.objects.create(name=name, secrets=[secret])
        audit_log(actor=actor, verb="intake_source.created", data={"source": name})
    return source, secret


def intake_source_rotate(*, source: IntakeSource, keep_old: bool = True, actor: str = "system") -> str:
    """Add a new secret (newest first). Old ones stay valid unless keep_old is False."""
    secret = webhooks.generate_secret()
    with transaction.atomic():
        source = IntakeSource.objects.select_for_update().get(pk=source.pk)
        source.secrets = [secret, *source.secrets] if keep_old else [secret]
        source.save(update_fields=["secrets"])
        audit_log(
            actor=actor,
            verb="intake_source.rotated",
            data={"source": source.name, "kept_old": keep_old, "active_secrets": len(source.secrets)},
        )
    return secret


def intake_source_set_enabled(*, source: IntakeSource, enabled: bool, actor: str = "system") -> IntakeSource:
    with transaction.atomic():
        source.enabled = enabled
        source.save(update_fields=["enabled"])
        audit_log(
            actor=actor,
            verb="intake_source.enabled" if enabled else "intake_source.disabled",
            data={"source": source.name},
        )
    return source
