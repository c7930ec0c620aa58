"""Operator and admin actions on runs: approvals, replies, reassign/escalate/resolve, agent settings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from support_agents.events import publish_event
from support_agents.models import (
    DEFAULT_REPLY_RETRIES,
    AgentProcedure,
    AgentProfile,
    AgentProfileVersion,
    AgentRun,
    Approval,
    AuditEvent,
    AutoSend,
    Handoff,
    Message,
    Ticket,
    TicketStatus,
)
from support_agents.services.audit import actor_for_user

ACTIVE_RUN = (AgentRun.Status.QUEUED, AgentRun.Status.RUNNING, AgentRun.Status.AWAITING_APPROVAL)


class ApprovalError(ValidationError):
    pass


def _approval_decide(
    approval: Approval, user: Any, *, status: str, edited_args: dict | None, note: str
) -> Approval:
    from support_agents.runner import enqueue_run, ticket_move
    from support_agents.tools import REGISTRY, validate_args

    actor = actor_for_user(user)
    with transaction.atomic():
        approval = (
            Approval.objects.select_for_update().select_related("run__agent", "ticket").get(pk=approval.pk)
        )
        if approval.status != Approval.Status.PENDING:
            raise ApprovalError({"approval": f"already {approval.status}"})
        if edited_args is not None:
            tool = REGISTRY[approval.tool]
            parsed, err = validate_args(tool, edited_args)
            if parsed is None:
                raise ApprovalError({"args": err})
            edited_args = parsed.model_dump(mode="json")
        approval.status = status
        approval.edited_args = edited_args
        approval.decided_by = user
        approval.decided_at = timezone.now()
        approval.decision_note = note[:300]
        approval.save()
        AuditEvent.objects.create(
            actor=actor,
            verb=f"approval.{status}",
            ticket=approval.ticket,
            data={
                "approval": approval.pk,
                "tool": approval.tool,
                "args": approval.args,
                "edited_args": edited_args,
                "note": note,
            },
        )
        run = approval.run
        AgentRun.objects.filter(pk=run.pk).update(status=AgentRun.Status.QUEUED, attempts=0)
        ticket_move(
            approval.ticket,
            TicketStatus.IN_PROGRESS,
            actor=actor,
            reason=f"{approval.tool} {status} by operator",
        )
        publish_event(
            "approval.decided",
            ticket_id=approval.ticket_id,
            data={"approval_id": approval.pk, "status": status, "run_id": run.pk},
        )
        # The run resumes in a new task from its state in PostgreSQL.
        enqueue_run(run)
    return approval


def approval_approve(approval: Approval, user: Any, edited_args: dict | None = None) -> Approval:
    return _approval_decide(approval, user, status=Approval.Status.APPROVED, edited_args=edited_args, note="")


def approval_reject(approval: Approval, user: Any, note: str = "") -> Approval:
    return _approval_decide(approval, user, status=Approval.Status.REJECTED, edited_args=None, note=note)


def reply_send(draft: Message, user: Any, edited_body: str | None = None) -> Message:
    from support_agents.runner import ticket_move

    actor = actor_for_user(user)
    with transaction.atomic():
        msg = Message.objects.select_for_update().get(pk=draft.pk)
        if not msg.is_draft:
            raise ValidationError({"message": "this reply was already sent"})
        if edited_body is not None:
            if not edited_body.strip():
                raise ValidationError({"body": "the reply cannot be empty"})
            msg.data = {**msg.data, "original_body": msg.body, "edited_by": actor}
            msg.body = edited_body
        msg.is_draft = False
        msg.data = {**msg.data, "sent_by": actor}
        msg.save(update_fields=["body", "is_draft", "data"])
        AuditEvent.objects.create(
            actor=actor,
            verb="reply.sent",
            ticket_id=msg.ticket_id,
            data={"message_id": msg.pk, "edited": edited_body is not None},
        )
        ticket_move(msg.ticket, TicketStatus.REPLIED, actor=actor, reason="reply sent by operator")
        publish_event("message.sent", ticket_id=msg.ticket_id, data={"message_id": msg.pk})
    return msg


def _stop_active_runs(ticket: Ticket, status: str, reason: str) -> None:
    AgentRun.objects.filter(ticket=ticket, status__in=ACTIVE_RUN).update(
        status=status, error=reason, finished_at=timezone.now()
    )
    Approval.objects.filter(ticket=ticket, status=Approval.Status.PENDING).update(
        status=Approval.Status.REJECTED, decision_note=reason[:300], decided_at=timezone.now()
    )


def ticket_reassign(ticket: Ticket, agent_slug: str, user: Any) -> AgentRun:
    """Send the ticket to another agent (also how a human triages a needs_triage ticket)."""
    from support_agents.router import intent_queues
    from support_agents.runner import enqueue_run, run_create, ticket_move

    actor = actor_for_user(user)
    agent = AgentProfile.objects.filter(slug=agent_slug).first()
    if agent is None or not agent.enabled:
        raise ValidationError({"agent": f"unknown or disabled agent {agent_slug!r}"})
    with transaction.atomic():
        caller, ticket = ticket, Ticket.objects.select_for_update().get(pk=ticket.pk)
        _stop_active_runs(ticket, AgentRun.Status.HANDED_OFF, f"reassigned to {agent.slug} by {actor}")
        intent = ticket.intent if intent_queues().get(ticket.intent) == agent.slug else "_default"
        Handoff.objects.create(
            ticket=ticket,
            from_label=actor[:40],
            to_agent=agent,
            to_label=agent.slug,
            reason=f"reassigned by {actor}",
            context_summary={"intent": intent},
        )
        run = run_create(ticket=ticket, agent=agent, intent=intent)
        ticket_move(
            ticket,
            TicketStatus.QUEUED,
            actor=actor,
            reason=f"reassigned to {agent.slug}",
            updates={"queue": agent.slug, "assigned_agent": agent},
        )
        enqueue_run(run)
    caller.refresh_from_db()
    return run


def ticket_escalate(ticket: Ticket, user: Any, reason: str) -> Ticket:
    from support_agents.runner import ticket_move

    actor = actor_for_user(user)
    if not (reason or "").strip():
        raise ValidationError({"reason": "say why the ticket is escalated"})
    with transaction.atomic():
        caller, ticket = ticket, Ticket.objects.select_for_update().get(pk=ticket.pk)
        _stop_active_runs(ticket, AgentRun.Status.ESCALATED, f"escalated by {actor}")
        Handoff.objects.create(ticket=ticket, from_label=actor[:40], to_label="human", reason=reason[:300])
        ticket_move(ticket, TicketStatus.ESCALATED, actor=actor, reason=reason, updates={"queue": "human"})
    caller.refresh_from_db()
    return caller


def ticket_resolve(ticket: Ticket, user: Any) -> Ticket:
    from support_agents.runner import ticket_move

    actor = actor_for_user(user)
    with transaction.atomic():
        caller, ticket = ticket, Ticket.objects.select_for_update().get(pk=ticket.pk)
        _stop_active_runs(ticket, AgentRun.Status.ESCALATED, f"resolved by {actor}")
        ticket_move(ticket, TicketStatus.RESOLVED, actor=actor, reason="resolved by operator")
    caller.refresh_from_db()
    return caller


# --------------------------------------------------------------------------------------------------
# agent profiles

PROFILE_FIELDS = (
    "display_name",
    "enabled",
    "system_prompt",
    "model_path",
    "generation",
    "tools",
    "auto_send",
    "max_steps",
    "refund_approval_limit",
    "confidence_threshold",
)
GENERATION_KEYS = {"max_new_tokens", "temperature", "top_p", "seed", "tool_calling", "reply_retries"}


def profile_snapshot(profile: AgentProfile) -> dict:
    return {
        f: (str(getattr(profile, f)) if f == "refund_approval_limit" else getattr(profile, f))
        for f in PROFILE_FIELDS
    }


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _validate_profile_changes(changes: dict) -> dict[str, str]:
    from support_agents.tools import REGISTRY

    errs: dict[str, str] = {}
    for key in changes:
        if key not in PROFILE_FIELDS:
            errs[key] = "not an editable setting"
    if "display_name" in changes and not str(changes["display_name"] or "").strip():
        errs["display_name"] = "required"
    if "enabled" in changes and not isinstance(changes["enabled"], bool):
        errs["enabled"] = "must be true or false"
    if "tools" in changes:
        tools = changes["tools"]
        if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
            errs["tools"] = "must be a list of tool names"
        elif unknown := sorted(set(tools) - set(REGISTRY)):
            errs["tools"] = f"unknown tools: {', '.join(unknown)}"
    if "auto_send" in changes and changes["auto_send"] not in AutoSend.values:
        errs["auto_send"] = f"one of {', '.join(AutoSend.values)}"
    if "max_steps" in changes and not _int_in(changes["max_steps"], 1, 50):
        errs["max_steps"] = "an integer from 1 to 50"
    if "refund_approval_limit" in changes:
        try:
            v = Decimal(str(changes["refund_approval_limit"]))
            if not v.is_finite() or v < 0 or v > Decimal("1000000"):
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            errs["refund_approval_limit"] = "an amount from 0 to 1000000"
    if "confidence_threshold" in changes:
        v = changes["confidence_threshold"]
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0.0 <= float(v) <= 1.0:
            errs["confidence_threshold"] = "a number from 0 to 1"
    if "generation" in changes:
        g = changes["generation"]
        if not isinstance(g, dict):
            errs["generation"] = "must be an object"
        elif bad := sorted(set(g) - GENERATION_KEYS):
            errs["generation"] = f"unknown keys: {', '.join(bad)}"
        else:
            mnt = g.get("max_new_tokens", 1)
            temp = g.get("temperature", 0.0)
            top_p = g.get("top_p", 1.0)
            if not isinstance(mnt, int) or not 1 <= mnt <= 2048:
                errs["generation"] = "max_new_tokens: an integer from 1 to 2048"
            elif not isinstance(temp, int | float) or not 0 <= temp <= 5:
                errs["generation"] = "temperature: a number from 0 to 5"
            elif not isinstance(top_p, int | float) or not 0 < top_p <= 1:
                errs["generation"] = "top_p: a number in (0, 1]"
            elif g.get("tool_calling", "procedure") not in ("procedure", "free"):
                errs["generation"] = "tool_calling: procedure or free"
            elif not _int_in(g.get("reply_retries", DEFAULT_REPLY_RETRIES), 0, 3):
                errs["generation"] = "reply_retries: an integer from 0 to 3"
    if "model_path" in changes:
        from support_agents.inference import agent_path

        mp = str(changes["model_path"] or "")
        if mp and not (agent_path(mp) / "config.json").exists():
            errs["model_path"] = f"no checkpoint (config.json) at {mp}"
    return errs


def agent_profile_update(profile: AgentProfile, user: Any, **changes: Any) -> AgentProfileVersion:
    """Validate, save, snapshot a new version and audit; raises ValidationError with field messages."""
    errs = _validate_profile_changes(changes)
    if errs:
        raise ValidationError(errs)
    actor = actor_for_user(user) if user is not None else "system"
    caller = profile
    with transaction.atomic():
        profile = AgentProfile.objects.select_for_update().get(pk=profile.pk)
        before = profile_snapshot(profile)
        for key, value in changes.items():
            if key == "refund_approval_limit":
                value = Decimal(str(value))
            setattr(profile, key, value)
        profile._versioned_by_service = True  # the post_save hook leaves this version to us
        profile.save()
        from support_agents.runner import profile_version_current

        current = profile_version_current(profile) if profile.versions.exists() else None
        number = (current.version + 1) if current else 1
        after = profile_snapshot(profile)
        diff = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
        version = AgentProfileVersion.objects.create(
            profile=profile, version=number, snapshot=after, changed_by=actor, changes=diff
        )
        AuditEvent.objects.create(
            actor=actor,
            verb="agent.updated",
            data={"agent": profile.slug, "version": number, "changes": diff},
        )
    caller.refresh_from_db()
    return version


def procedure_update(procedure: AgentProcedure, user: Any, definition: dict) -> AgentProcedure:
    from support_agents.language import FIELDS
    from support_agents.procedures import validate_definition
    from support_agents.tools import REGISTRY

    errs = validate_definition(
        definition,
        tools=set(REGISTRY),
        fields=set(FIELDS),
        agents=set(AgentProfile.objects.values_list("slug", flat=True)),
    )
    if errs:
        raise ValidationError({"definition": errs})
    with transaction.atomic():
        procedure = AgentProcedure.objects.select_for_update().get(pk=procedure.pk)
        procedure.definition = definition
        procedure.version += 1
        procedure.save()
        AuditEvent.objects.create(
            actor=actor_for_user(user) if user is not None else "system",
            verb="procedure.updated",
            data={"agent": procedure.agent.slug, "intent": procedure.intent, "version": procedure.version},
        )
    return procedure
