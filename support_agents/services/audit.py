from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from support_agents.models import AuditEvent, Ticket


def actor_for_user(user: AbstractBaseUser) -> str:
    return f"user:{user.get_username()}"


def actor_for_agent(slug: str) -> str:
    return f"agent:{slug}"


def audit_log(
    *, actor: str, verb: str, ticket: Ticket | None = None, data: dict[str, Any] | None = None
) -> AuditEvent:
    """Append one audit record; call inside the transaction whose effect it records."""
    return AuditEvent.objects.create(actor=actor, verb=verb, ticket=ticket, data=data or {})
