"""Free tool-calling mode for a user checkpoint with a chat template.

The model sees the agent's allowed tools (JSON schemas) and answers each turn with one JSON object:
`{"tool": NAME, "arguments": {...}}` to call a tool, or `{"reply": TEXT}` to finish. Whatever it
writes, the call goes through `invoke_tool`, so the allow-list, argument schema, approval rules and
idempotency hold exactly as in procedure mode; malformed output is recorded and ends the run with
an escalation rather than a guess.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from support_agents.models import AgentProfile, AgentRun, RunStep, TicketStatus

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


@dataclass
class Action:
    kind: str  # tool / reply / invalid
    tool: str = ""
    arguments: Any = None
    reply: str = ""
    error: str = ""


def parse_action(text: str) -> Action:
    """The model's turn -> an action. Accepts a bare JSON object or Qwen-style <tool_call> tags."""
    m = TOOL_CALL_RE.search(text)
    blob = m.group(1) if m else None
    if blob is None:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return Action("invalid", error="no JSON object in the model output")
        blob = text[start:end + 1]
    try:
        obj = json.loads(blob)
    except ValueError as e:
        return Action("invalid", error=f"invalid JSON: {e}")
    if not isinstance(obj, dict):
        return Action("invalid", error="output must be a JSON object")
    if isinstance(obj.get("reply"), str):
        return Action("reply", reply=obj["reply"].strip())
    name = obj.get("tool", obj.get("name"))
    args = obj.get("arguments", obj.get("args", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return Action("invalid", error="arguments are not a JSON object")
    if not isinstance(name, str) or not name:
        return Action("invalid", error="missing tool name")
    return Action("tool", tool=name, arguments=args)


def tool_signature(tool) -> str:  # noqa: ANN001
    """Compact schema line: name(arg: type, opt?: type) - description (full JSON schema is too long for
    small context windows; arguments are validated against the full schema anyway)."""
    props = tool.args.model_json_schema().get("properties", {})
    required = set(tool.args.model_json_schema().get("required", []))
    parts = []
    for name, spec in props.items():
        typ = spec.get("type") or "/".join(x.get("type", "?") for x in spec.get("anyOf", [])) or "value"
        parts.append(f"{name}{'' if name in required else '?'}: {typ}")
    return f"{tool.name}({', '.join(parts)}) - {tool.description}"


def system_prompt(profile: AgentProfile) -> str:
    from support_agents.tools import REGISTRY

    lines = [tool_signature(REGISTRY[t]) for t in profile.tools or [] if t in REGISTRY]
    return (f"{profile.system_prompt}\nTools:\n" + "\n".join(lines) +
            '\nAnswer with one JSON object: {"tool": NAME, "arguments": {...}} or {"reply": TEXT}.')


def apply_action(run: AgentRun, action: Action, *, turn: int) -> dict | None:
    """Execute one parsed action; returns the observation for the next turn (None = the run stopped)."""
    from support_agents.runner import RunPaused, _complete, _escalate, agent_actor, record_step, ticket_move
    from support_agents.tools import invoke_tool

    if action.kind == "invalid":
        with transaction.atomic():
            record_step(run, kind=RunStep.Kind.GUARDRAIL, name="invalid_output", status=RunStep.Status.REFUSED,
                        error=action.error)
        _escalate(run, f"model output rejected: {action.error}")
        raise RunPaused
    if action.kind == "reply":
        facts = {k: str(v) for r in run.state.get("results", {}).values() for k, v in r.items()
                 if isinstance(v, str | int | float)}
        from support_agents.language import faithfulness_problems, template_reply

        name = run.ticket.customer.name or "there"
        problems = faithfulness_problems(action.reply, facts, customer_name=name) if action.reply else ["empty reply"]
        text, source = (action.reply, "model") if not problems else (
            template_reply(customer_name=name, intent=run.intent, facts=facts), "template")
        _complete(run, text, facts=facts, source=source, problems=problems, trace=[], model=None)
        raise RunPaused
    step_index = 1000 + turn  # free-mode calls get their own idempotency slots
    with transaction.atomic():
        out = invoke_tool(run=run, ticket=run.ticket, step_index=step_index, name=action.tool,
                          args=action.arguments, actor=agent_actor(run))
        kind = RunStep.Kind.GUARDRAIL if out.status == "refused" else RunStep.Kind.TOOL
        record_step(run, kind=kind, name=action.tool, status="ok" if out.ok else (
            "refused" if out.status == "refused" else "waiting" if out.status == "pending_approval" else "error"),
            input=action.arguments if isinstance(action.arguments, dict) else {"raw": str(action.arguments)},
            output=out.result, error=out.error)
        if out.ok:
            run.state.setdefault("results", {})[f"call{turn}"] = out.result
        run.state["turn"] = turn + 1
        AgentRun.objects.filter(pk=run.pk).update(state=run.state)
        if out.status == "pending_approval":
            AgentRun.objects.filter(pk=run.pk).update(status=AgentRun.Status.AWAITING_APPROVAL, attempts=0)
            ticket_move(run.ticket, TicketStatus.AWAITING_APPROVAL, actor=agent_actor(run),
                        reason=f"{action.tool} needs approval: {out.error}")
    if out.status == "pending_approval":  # outside the atomic block, which must commit the pause
        raise RunPaused
    if out.status == "refused":  # a guardrail hit is a security event: a human looks at the ticket
        _escalate(run, f"tool {action.tool} refused: {out.error}")
        raise RunPaused
    return {"tool": action.tool, "status": out.status, "result": out.result, "error": out.error}


def run_free(run: AgentRun) -> None:
    from support_agents.runner import RunPaused, _escalate, _language_model, _record_model_calls

    model = _language_model(run)
    tok = model.tokenizer
    if not getattr(tok, "chat_template", None):
        _escalate(run, "free tool-calling mode needs a checkpoint with a chat template")
        raise RunPaused
    profile = AgentProfile.objects.get(pk=run.agent_id)
    gen = profile.generation or {}
    messages = [{"role": "system", "content": system_prompt(profile)},
                {"role": "user", "content": run.ticket.body}]
    messages += run.state.get("transcript", [])
    turn = int(run.state.get("turn", 0))
    while turn < profile.max_steps:
        ids = tok.apply_chat_template(messages, add_generation_prompt=True)
        import time

        from support_agents.language import ModelCall

        limit = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
        if len(ids) + int(gen.get("max_new_tokens", 160)) > min(limit, 4096):
            _escalate(run, f"free-mode conversation too long for the model ({len(ids)} tokens)")
            raise RunPaused
        t0 = time.perf_counter()
        out = model.generate([ids], max_new_tokens=int(gen.get("max_new_tokens", 160)),
                             temperature=float(gen.get("temperature", 0.0)), top_p=float(gen.get("top_p", 1.0)),
                             seed=gen.get("seed"), stop=[tok.eos_token] if tok.eos_token else None)
        text = tok.decode(list(out.tokens[0]))
        call = ModelCall("free_tool_call", tok.decode(ids, skip_special_tokens=False), text,
                         time.perf_counter() - t0, out.usage[0] if out.usage else None,
                         out.routing[0] if out.routing else None)
        with transaction.atomic():
            _record_model_calls(run, [call], model)
        obs = apply_action(run, parse_action(text), turn=turn)
        messages += [{"role": "assistant", "content": text}, {"role": "tool", "content": json.dumps(obs)}]
        run.state["transcript"] = messages[2:]
        AgentRun.objects.filter(pk=run.pk).update(state=run.state)
        turn += 1
    _escalate(run, f"no reply after {profile.max_steps} tool-calling turns")
    raise RunPaused
