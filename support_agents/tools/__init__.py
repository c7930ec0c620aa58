"""Agent tools: `invoke_tool` is the only way a run touches the bank's tables.

Order of checks on every call, in code and whatever the model said: allow-list of the agent's
current profile -> argument schema -> approval rule -> idempotent execution. Every outcome is a
ToolInvocation row plus an AuditEvent in the same transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from pydantic import ValidationError

from support_agents.models import AgentProfile, Approval, AuditEvent, ToolInvocation

from . import billing, sales, technical  # noqa: F401  (register the tools)
from .base import REGISTRY, Tool, ToolContext, ToolError, default_tools, tool_names

__all__ = ["REGISTRY", "Tool", "ToolContext", "ToolError", "ToolOutcome", "default_tools", "invoke_tool",
           "tool_names", "validate_args"]


@dataclass
class ToolOutcome:
    status: str  # a ToolInvocation.Status value
    result: dict = field(default_factory=dict)
    error: str = ""
    approval: Approval | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == ToolInvocation.Status.OK


def validate_args(tool: Tool, raw: Any) -> tuple[Any, str]:
    """(parsed args, "") or (None, field-level error message)."""
    if not isinstance(raw, dict):
        return None, "arguments must be a JSON object"
    try:
        return tool.args.model_validate(raw), ""
    except ValidationError as e:
        msgs = [f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()]
        return None, "; ".join(msgs)


def _jsonable(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {str(k): _jsonable(v) for k, v in raw.items()}
    if isinstance(raw, list | tuple):
        return [_jsonable(v) for v in raw]
    if raw is None or isinstance(raw, bool | int | float | str):
        return raw
    return str(raw)


def invoke_tool(*, run, ticket, step_index: int, name: str, args: Any, actor: str) -> ToolOutcome:
    """Run tool `name` for `run` at procedure step `step_index`; idempotent per (ticket, run, step).

    Call inside the caller's transaction so the effect, the invocation row and the run's progress
    commit together (a crash before commit leaves nothing; after commit, a redelivery replays).
    """
    key = f"t{ticket.pk}:r{run.pk}:s{step_index}"
    raw_args = _jsonable(args)
    with transaction.atomic():
        prior = ToolInvocation.objects.select_for_update().filter(idempotency_key=key).first()
        approval = Approval.objects.filter(run=run, step_index=step_index).first()
        if prior is not None and prior.status != ToolInvocation.Status.PENDING_APPROVAL:
            return ToolOutcome(prior.status, prior.result, prior.error, approval, replayed=True)
        if prior is not None and approval is not None and approval.status == Approval.Status.PENDING:
            return ToolOutcome(prior.status, prior.result, prior.error, approval, replayed=True)

        def record(status: str, result: dict | None = None, error: str = "", used_args: Any = raw_args,
                   effect: bool = False) -> ToolOutcome:
            ToolInvocation.objects.update_or_create(
                idempotency_key=key,
                defaults={"run": run, "ticket": ticket, "agent_slug": run.agent.slug, "tool": name,
                          "step_index": step_index, "args": used_args, "result": result or {}, "status": status,
                          "error": error, "has_effect": effect})
            AuditEvent.objects.create(actor=actor, verb=f"tool.{status}", ticket=ticket,
                                      data={"tool": name, "args": used_args, "run": run.pk, "step": step_index,
                                            "error": error})
            return ToolOutcome(status, result or {}, error, approval)

        # Re-read the profile: an admin who just removed a tool from the allow-list wins over the run.
        profile = AgentProfile.objects.get(pk=run.agent_id)
        tool = REGISTRY.get(name)
        if tool is None or name not in (profile.tools or []):
            why = "unknown tool" if tool is None else f"tool not allowed for agent {profile.slug}"
            return record(ToolInvocation.Status.REFUSED, error=why)

        if approval is not None and approval.status == Approval.Status.REJECTED:
            return record(ToolInvocation.Status.REJECTED, {"status": "not approved"},
                          error=approval.decision_note or "rejected by operator")
        approved = approval is not None and approval.status == Approval.Status.APPROVED
        parsed, err = validate_args(tool, approval.effective_args if approved else raw_args)
        if parsed is None:
            return record(ToolInvocation.Status.INVALID, error=err)
        used = parsed.model_dump(mode="json")
        ctx = ToolContext(ticket=ticket, customer=ticket.customer, run=run, profile=profile,
                          step_index=step_index, idempotency_key=key)
        if not approved and tool.approval is not None:
            try:
                reason = tool.approval(ctx, parsed)
            except ToolError as e:
                return record(ToolInvocation.Status.ERROR, error=str(e), used_args=used)
            if reason:
                approval, _ = Approval.objects.get_or_create(
                    run=run, step_index=step_index,
                    defaults={"ticket": ticket, "tool": name, "args": used, "reason": reason})
                return record(ToolInvocation.Status.PENDING_APPROVAL, error=reason, used_args=used)
        try:
            with transaction.atomic():
                result = tool.fn(ctx, parsed)
        except ToolError as e:
            return record(ToolInvocation.Status.ERROR, error=str(e), used_args=used)
        return record(ToolInvocation.Status.OK, _jsonable(result), used_args=used, effect=tool.effect)
