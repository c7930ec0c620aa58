"""Agent run state machine: extract -> procedure steps (tools, approvals, handoffs) -> reply.

Everything a run knows is in its AgentRun row (`state`, `step_index`), written in the same
transaction as each step's effect, so any worker can resume a run after a crash, a redelivery or an
approval. A PostgreSQL advisory lock keeps two deliveries of one run from executing at once.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from support_agents.events import publish_event
from support_agents.models import (
    ALLOWED_TRANSITIONS,
    DEFAULT_REPLY_RETRIES,
    AgentProcedure,
    AgentProfile,
    AgentProfileVersion,
    AgentRun,
    Approval,
    AuditEvent,
    AuthorKind,
    AutoSend,
    Handoff,
    Message,
    PriceSetting,
    RunStep,
    Ticket,
    TicketStatus,
)
from support_agents.procedures import check, render_facts, resolve
from support_agents.services.tickets import ticket_transition
from support_agents.tools import invoke_tool

log = logging.getLogger("moedesk.runner")

MAX_HANDOFFS = int(os.environ.get("MOEDESK_MAX_HANDOFFS", "3"))
MAX_DELIVERIES = int(os.environ.get("MOEDESK_MAX_DELIVERIES", "3"))
DEFAULT_INTENT = "_default"


class RunPaused(Exception):
    """Internal: the run stopped on purpose (approval, handoff, escalation)."""


class RunTimeLimit(Exception):
    """The run used up its soft time budget for this delivery (checked between steps)."""


SOFT_SECONDS = float(os.environ.get("CELERY_TASK_SOFT_TIME_LIMIT", "120"))
_deadline: dict[int, float] = {}


def _check_deadline(run: AgentRun) -> None:
    # Cooperative soft limit: Celery's pool timer is the backstop, this makes the common case clean
    # (the step in flight has committed, the next one has not started).
    end = _deadline.get(run.pk)
    if end is not None and time.monotonic() > end:
        raise RunTimeLimit(f"agent run hit its soft time limit ({SOFT_SECONDS:g}s)")


def agent_actor(run: AgentRun) -> str:
    return f"agent:{run.agent.slug}"


# --------------------------------------------------------------------------------------------------
# ticket moves


def _path(src: str, dst: str) -> list[str]:
    """Shortest chain of allowed transitions from src to dst (empty if already there)."""
    if src == dst:
        return []
    prev: dict[str, str | None] = {src: None}
    q = deque([src])
    while q:
        cur = q.popleft()
        for nxt in ALLOWED_TRANSITIONS.get(cur, ()):
            if nxt not in prev:
                prev[nxt] = cur
                if nxt == dst:
                    out = [dst]
                    while prev[out[-1]] != src:
                        out.append(prev[out[-1]])
                    return out[::-1]
                q.append(nxt)
    raise ValueError(f"no transition path from {src} to {dst}")


def ticket_move(ticket: Ticket, to_status: str, *, actor: str, reason: str = "", updates: dict | None = None,
                data: dict | None = None) -> Ticket:
    """Move along allowed transitions (each one audited); updates apply on the last hop."""
    ticket.refresh_from_db(fields=["status"])
    hops = _path(ticket.status, to_status)
    if not hops and updates:
        Ticket.objects.filter(pk=ticket.pk).update(**{k: v for k, v in updates.items()}, updated_at=timezone.now())
        ticket.refresh_from_db()
    for i, hop in enumerate(hops):
        last = i == len(hops) - 1
        ticket_transition(ticket, hop, actor=actor, reason=reason, data=data, updates=updates if last else None)
    return ticket


# --------------------------------------------------------------------------------------------------
# creation


def profile_version_current(profile: AgentProfile) -> AgentProfileVersion:
    v = profile.versions.order_by("-version").first()
    if v is None:
        from support_agents.services.agents import profile_snapshot

        v, _ = AgentProfileVersion.objects.get_or_create(
            profile=profile, version=1, defaults={"snapshot": profile_snapshot(profile), "changed_by": "system"})
    return v


def procedure_for(agent: AgentProfile, intent: str) -> AgentProcedure | None:
    procs = {p.intent: p for p in AgentProcedure.objects.filter(agent=agent, intent__in=[intent, DEFAULT_INTENT],
                                                                 enabled=True)}
    return procs.get(intent) or procs.get(DEFAULT_INTENT)


def run_create(*, ticket: Ticket, agent: AgentProfile, intent: str, context: dict | None = None) -> AgentRun:
    """A queued run with the profile version and procedure it will use, frozen now."""
    version = profile_version_current(agent)
    proc = procedure_for(agent, intent)
    mode = AgentRun.Mode.FREE if (agent.generation or {}).get("tool_calling") == "free" else AgentRun.Mode.PROCEDURE
    state: dict[str, Any] = {"n": 0, "args": {}, "results": {}, "errors": {}, "tool_calls": 0}
    if proc is not None:
        state["procedure"] = proc.definition
        state["procedure_version"] = proc.version
    return AgentRun.objects.create(ticket=ticket, agent=agent, profile_version=version, procedure=proc, intent=intent,
                                   mode=mode, state=state, context=context or {})


def enqueue_run(run: AgentRun) -> None:
    """Send the run to its agent's queue once the current transaction commits."""
    from support_agents import tasks

    tasks.run_agent.apply_async_on_commit((run.pk,), queue=run.agent.queue or run.agent.slug)


# --------------------------------------------------------------------------------------------------
# recording


def _price(device: str) -> Decimal | None:
    kind = "gpu" if device.startswith("cuda") else "cpu"
    row = PriceSetting.objects.filter(device=kind).first()
    return row.price_per_hour if row else None


def routing_summary(ids: Any, n_experts: int, tokens: list[str] | None = None, max_tokens: int = 256) -> dict:
    """Per-layer expert counts plus per-token ids for the console's heatmaps (ids: [layers, T, k])."""
    import torch

    if ids is None:
        return {}
    t = torch.as_tensor(ids).long()
    if t.numel() == 0:
        return {}
    L, T, _ = t.shape
    counts = torch.zeros(L, n_experts, dtype=torch.long)
    counts.scatter_add_(1, t.reshape(L, -1).clamp(0, n_experts - 1), torch.ones_like(t.reshape(L, -1)))
    out = {"layers": L, "experts": n_experts, "tokens_total": T, "expert_counts": counts.tolist(),
           "ids": t[:, :max_tokens].permute(1, 0, 2).tolist()}
    if tokens is not None:
        out["tokens"] = tokens[:max_tokens]
    return out


def record_step(run: AgentRun, *, kind: str, name: str, status: str = RunStep.Status.OK, input: dict | None = None,
                output: dict | None = None, error: str = "", telemetry: dict | None = None) -> RunStep:
    """Append a step (inside the caller's transaction) and announce it after commit."""
    idx = int(run.state.get("n", 0))
    step, _ = RunStep.objects.update_or_create(
        run=run, index=idx,
        defaults={"kind": kind, "name": name, "status": status, "input": input or {}, "output": output or {},
                  "error": error[:2000], **(telemetry or {})})
    run.state["n"] = idx + 1
    AgentRun.objects.filter(pk=run.pk).update(state=run.state)
    publish_event("run.step", ticket_id=run.ticket_id,
                  data={"run_id": run.pk, "agent": run.agent.slug, "index": idx, "kind": kind, "name": name,
                        "status": status})
    return step


def model_telemetry(call: Any, model: Any) -> dict:
    """RunStep fields from a language ModelCall (usage from the engine, routing ids)."""
    u = call.usage
    tel: dict[str, Any] = {"latency_ms": call.seconds * 1000.0}
    if u is not None:
        price = _price(u.device)
        cost = Decimal(str(u.device_seconds)) / 3600 * price if price is not None else Decimal(str(u.cost_usd))
        tel.update(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                   device_seconds=u.device_seconds, device=u.device[:8], cost=cost.quantize(Decimal("1e-8")),
                   flops=float(u.flops), dense_flops=float(u.dense_flops), active_params=u.active_params,
                   total_params=u.total_params)
    n_exp = int(getattr(model.config, "n_experts", 0) or getattr(model.config, "num_experts", 0) or 0)
    if call.routing is not None and n_exp:
        toks = None
        try:
            tok = model.tokenizer
            ids = tok.encode(call.prompt) + tok.encode(call.completion, add_special_tokens=False)
            toks = [tok.decode([i], skip_special_tokens=False) for i in ids]
        except Exception:  # token text is a nicety for hover labels; never fail a run over it
            toks = None
        tel["routing"] = routing_summary(call.routing, n_exp, toks)
    return tel


def _record_model_calls(run: AgentRun, trace: list, model: Any) -> None:
    for call in trace:
        record_step(run, kind=RunStep.Kind.MODEL, name=call.task,
                    input={"prompt": call.prompt[-4000:]}, output={"completion": call.completion[:4000]},
                    telemetry=model_telemetry(call, model))
    trace.clear()


# --------------------------------------------------------------------------------------------------
# execution


@contextmanager
def run_lock(run_id: int):
    """Session advisory lock; released on exit or when a killed worker's connection drops."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", [7301, run_id])
        got = cur.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", [7301, run_id])


def _scope(run: AgentRun) -> dict:
    t = run.ticket
    return {"ticket": {"body": t.body, "subject": t.subject, "intent": run.intent, "reference": t.reference},
            "customer": {"name": t.customer.name, "email": t.customer.email},
            "args": run.state.get("args", {}), "results": run.state.get("results", {}),
            "errors": run.state.get("errors", {}), "context": run.context}


def execute_run(run_id: int) -> str:
    """Advance a run as far as it can go; returns the run's status afterwards (or "busy")."""
    with run_lock(run_id) as got:
        if not got:
            return "busy"
        with transaction.atomic():
            run = AgentRun.objects.select_for_update().select_related("agent", "ticket__customer").get(pk=run_id)
            if run.status in AgentRun.TERMINAL:
                return run.status
            if (run.status == AgentRun.Status.AWAITING_APPROVAL
                    and run.approvals.filter(status=Approval.Status.PENDING).exists()):
                return run.status
            run.attempts += 1
            if run.attempts > MAX_DELIVERIES:
                run.save(update_fields=["attempts"])
                _fail(run, f"gave up after {MAX_DELIVERIES} deliveries (worker crashes or time limits)")
                return AgentRun.Status.FAILED
            run.status = AgentRun.Status.RUNNING
            run.started_at = run.started_at or timezone.now()
            run.save(update_fields=["attempts", "status", "started_at"])
            if run.ticket.status != TicketStatus.IN_PROGRESS:
                ticket_move(run.ticket, TicketStatus.IN_PROGRESS, actor=agent_actor(run), reason=f"{run.agent.slug} run started",
                            updates={"assigned_agent": run.agent})
        _deadline[run.pk] = time.monotonic() + SOFT_SECONDS
        try:
            if run.mode == AgentRun.Mode.FREE:
                from support_agents.free_mode import run_free

                run_free(run)
            else:
                _run_procedure(run)
        except RunPaused:
            pass
        finally:
            _deadline.pop(run.pk, None)
        run.refresh_from_db(fields=["status"])
        return run.status


def _language_model(run: AgentRun) -> Any:
    from support_agents.inference import agent_path, get_generator

    return get_generator(agent_path(run.agent.model_path))


def _run_procedure(run: AgentRun) -> None:
    from support_agents import language

    proc = run.state.get("procedure")
    if proc is None:
        _escalate(run, f"no procedure for intent {run.intent!r} on agent {run.agent.slug}")
        raise RunPaused
    if "extracted" not in run.state:
        fields = [f for f in proc.get("extract", []) if f in language.FIELDS]
        learned = dict((run.context or {}).get("learned", {}))
        args: dict[str, Any] = {}
        if fields:
            model, trace = _language_model(run), []
            args = language.extract_arguments(model, intent=run.intent, text=run.ticket.body, fields=fields, trace=trace)
            with transaction.atomic():
                _record_model_calls(run, trace, model)
        merged = {**learned, **{k: v for k, v in args.items() if v is not None}}
        with transaction.atomic():
            run.state["args"] = merged
            run.state["extracted"] = True
            AgentRun.objects.filter(pk=run.pk).update(state=run.state)
    steps = proc.get("steps", [])
    while run.step_index < len(steps):
        _check_deadline(run)
        _do_step(run, steps[run.step_index])
    _check_deadline(run)
    _finish_with_reply(run, proc)


def _advance(run: AgentRun) -> None:
    run.step_index += 1
    AgentRun.objects.filter(pk=run.pk).update(step_index=run.step_index, state=run.state)


def _do_step(run: AgentRun, st: dict) -> None:
    scope = _scope(run)
    sid = st.get("id") or f"s{run.step_index}"
    if not check(st.get("when"), scope):
        with transaction.atomic():
            _advance(run)
        return
    if "escalate" in st:
        _escalate(run, str(resolve(st["escalate"], scope)))
        raise RunPaused
    if "handoff" in st:
        h = st["handoff"]
        _handoff(run, to_slug=h["to"], intent=h.get("intent") or run.intent, reason=h.get("reason", "procedure handoff"))
        raise RunPaused
    profile = AgentProfile.objects.get(pk=run.agent_id)
    if run.state.get("tool_calls", 0) >= profile.max_steps:
        _escalate(run, f"step budget of {profile.max_steps} tool calls used up")
        raise RunPaused
    args = {k: v for k, v in resolve(st.get("args", {}), scope).items() if v is not None}
    _slow_step_hook(f"before:{st['tool']}")
    _check_deadline(run)
    with transaction.atomic():
        AgentRun.objects.select_for_update().filter(pk=run.pk).first()
        out = invoke_tool(run=run, ticket=run.ticket, step_index=run.step_index, name=st["tool"], args=args,
                          actor=agent_actor(run))
        status = {"ok": "ok", "refused": "refused", "pending_approval": "waiting", "rejected": "skipped"}.get(
            out.status, "error")
        kind = RunStep.Kind.GUARDRAIL if out.status == "refused" else RunStep.Kind.TOOL
        if out.status == "pending_approval":
            kind = RunStep.Kind.APPROVAL
        if not out.replayed or out.status != "pending_approval":
            record_step(run, kind=kind, name=st["tool"], status=status, input=args, output=out.result, error=out.error)
        if out.status == "pending_approval":
            run.status = AgentRun.Status.AWAITING_APPROVAL
            run.attempts = 0  # the next delivery is a new task, not a redelivery of this one
            AgentRun.objects.filter(pk=run.pk).update(status=run.status, attempts=0, state=run.state)
            ticket_move(run.ticket, TicketStatus.AWAITING_APPROVAL, actor=agent_actor(run),
                        reason=f"{st['tool']} needs approval: {out.error}",
                        data={"approval_id": out.approval.pk if out.approval else None})
            publish_event("approval.requested", ticket_id=run.ticket_id,
                          data={"run_id": run.pk, "approval_id": out.approval.pk if out.approval else None,
                                "tool": st["tool"], "reason": out.error})
            paused = True
        else:
            paused = False
            run.state.setdefault("results", {})
            run.state.setdefault("errors", {})
            if out.ok:
                run.state["results"][sid] = out.result
                run.state["tool_calls"] = run.state.get("tool_calls", 0) + 1
            else:
                run.state["errors"][sid] = "not approved by an operator" if out.status == "rejected" else out.error
            policy = "escalate" if out.status == "refused" else st.get("on_error", "escalate")
            done = out.ok or out.status == "rejected" or policy == "continue"
            if done:
                _advance(run)
    if paused:  # raised outside the atomic block, which must commit the pause
        raise RunPaused
    if done:
        _slow_step_hook(f"after:{st['tool']}")
        return
    # outside the step's transaction: the failed call is recorded and committed first
    if policy == "fail":
        with transaction.atomic():
            _fail(run, f"tool {st['tool']} failed: {out.error}")
    else:
        _escalate(run, f"tool {st['tool']} {out.status}: {out.error}")
    raise RunPaused


def _slow_step_hook(point: str) -> None:
    # Test-only: lets the crash test SIGKILL a worker at a known point ("before:TOOL" / "after:TOOL").
    want = os.environ.get("MOEDESK_TEST_SLOW_TOOL")
    if want and want == point:
        time.sleep(float(os.environ.get("MOEDESK_TEST_SLOW_SECONDS", "5")))


def _auto_send(run: AgentRun, faithful: bool) -> bool:
    rule = run.agent.auto_send
    if rule == AutoSend.ALWAYS:
        return True
    if rule == AutoSend.CONFIDENT:
        no_approval = not run.approvals.exists()
        conf = run.ticket.confidence or 0.0
        return faithful and no_approval and conf >= max(0.9, run.agent.confidence_threshold)
    return False


def _finish_with_reply(run: AgentRun, proc: dict) -> None:
    from support_agents import language

    facts = render_facts(proc.get("facts", {}), _scope(run))
    customer = run.ticket.customer
    name = customer.name.strip()  # none on file: greeted as "there", never by a guess from the email
    model, trace = _language_model(run), []
    problems: list[str] = []
    # The greedy draft first; if it is unfaithful or leaves facts out, sampled redrafts (seeded by the
    # run, so a redelivered task writes the same text) before the fact template: one by default, the
    # agent's `reply_retries` setting. In the pipeline benchmark one redraft raised the share of drafts
    # written by the model from 79% to 83-85% (docs/benchmarks.md).
    retries = (run.agent.generation or {}).get("reply_retries", DEFAULT_REPLY_RETRIES)
    for attempt in range(1 + retries):
        temperature = language.REDRAFT_TEMPERATURE if attempt else 0.0
        reply = language.write_reply(model, customer_name=name, intent=run.intent, facts=facts,
                                     message=run.ticket.body, trace=trace, temperature=temperature,
                                     seed=run.pk * 8 + attempt if attempt else None)  # one per run and redraft
        missing = language.missing_facts(reply.text, facts, proc.get("must_state"))
        problems += [*(f"draft {attempt + 1}: {p}" for p in reply.problems),
                     *(f"draft {attempt + 1}: does not state {k}" for k in missing)]
        if reply.faithful and not missing:
            text, source = reply.text, "model"
            break
    else:
        text, source = language.template_reply(customer_name=name, intent=run.intent, facts=facts), "template"
    _complete(run, text, facts=facts, source=source, problems=problems, trace=trace, model=model)



def _complete(run: AgentRun, text: str, *, facts: dict, source: str, problems: list[str], trace: list,
              model: Any) -> None:
    with transaction.atomic():
        locked = AgentRun.objects.select_for_update().get(pk=run.pk)
        if locked.status in AgentRun.TERMINAL:
            return  # another delivery finished it first
        _record_model_calls(run, trace, model)
        faithful = source == "model"
        record_step(run, kind=RunStep.Kind.REPLY, name="reply", input={"facts": facts},
                    output={"text": text, "source": source, "problems": problems})
        send = _auto_send(run, faithful)
        msg = Message.objects.create(ticket=run.ticket, author_kind=AuthorKind.AGENT, author_name=run.agent.display_name,
                                     body=text, is_draft=not send,
                                     data={"run_id": run.pk, "source": source, "facts": facts, "problems": problems})
        AuditEvent.objects.create(actor=agent_actor(run), verb="reply.sent" if send else "reply.drafted",
                                  ticket=run.ticket, data={"message_id": msg.pk, "run": run.pk, "source": source})
        run.status = AgentRun.Status.COMPLETED
        run.finished_at = timezone.now()
        AgentRun.objects.filter(pk=run.pk).update(status=run.status, finished_at=run.finished_at, state=run.state)
        ticket_move(run.ticket, TicketStatus.REPLIED if send else TicketStatus.DRAFT_READY, actor=agent_actor(run),
                    reason="reply sent" if send else "reply draft ready")
        publish_event("message.created", ticket_id=run.ticket_id,
                      data={"message_id": msg.pk, "is_draft": not send, "author_kind": "agent", "run_id": run.pk})


def _summary(run: AgentRun, reason: str) -> dict:
    done = [{"tool": t.tool, "status": t.status, "args": t.args} for t in run.tool_calls.order_by("created_at")]
    facts = render_facts(run.state.get("procedure", {}).get("facts", {}), _scope(run))
    learned = {k: v for k, v in run.state.get("args", {}).items() if v not in (None, "")}
    return {"from_agent": run.agent.slug, "from_intent": run.intent, "reason": reason, "learned": learned,
            "facts": facts, "done": done, "run_id": run.pk}


def _handoff(run: AgentRun, *, to_slug: str, intent: str, reason: str) -> None:
    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=run.ticket_id)
        prior = list(Handoff.objects.filter(ticket=ticket, from_agent__isnull=False, to_agent__isnull=False))
        been_from = {h.from_agent_id for h in prior} | {run.agent_id}
        target = AgentProfile.objects.filter(slug=to_slug, enabled=True).first()
        summary = {**_summary(run, reason), "intent": intent}
        why = None
        if target is None:
            why = f"handoff target {to_slug!r} is unknown or disabled"
        elif target.pk in been_from:
            path = " -> ".join([*[h.from_label for h in prior], run.agent.slug, to_slug])
            why = f"handoff cycle ({path})"
        elif len(prior) + 1 > MAX_HANDOFFS:
            why = f"more than {MAX_HANDOFFS} handoffs"
        if why:
            _escalate(run, why, summary=summary, locked=True)
            return
        Handoff.objects.create(ticket=ticket, from_run=run, from_agent=run.agent, from_label=run.agent.slug,
                               to_agent=target, to_label=target.slug, reason=reason, context_summary=summary)
        record_step(run, kind=RunStep.Kind.HANDOFF, name=f"handoff:{target.slug}", output=summary)
        AgentRun.objects.filter(pk=run.pk).update(status=AgentRun.Status.HANDED_OFF, finished_at=timezone.now())
        new = run_create(ticket=ticket, agent=target, intent=intent, context=summary)
        ticket_move(ticket, TicketStatus.QUEUED, actor=agent_actor(run), reason=f"handed off to {target.slug}: {reason}",
                    updates={"queue": target.slug, "assigned_agent": target})
        publish_event("handoff", ticket_id=ticket.pk,
                      data={"from": run.agent.slug, "to": target.slug, "reason": reason, "run_id": new.pk})
        enqueue_run(new)


def _escalate(run: AgentRun, reason: str, *, summary: dict | None = None, locked: bool = False) -> None:
    with transaction.atomic():
        summary = summary or _summary(run, reason)
        Handoff.objects.create(ticket_id=run.ticket_id, from_run=run, from_agent=run.agent, from_label=run.agent.slug,
                               to_agent=None, to_label="human", reason=reason[:300], context_summary=summary)
        record_step(run, kind=RunStep.Kind.HANDOFF, name="escalate", status=RunStep.Status.OK,
                    output={"reason": reason})
        AgentRun.objects.filter(pk=run.pk).update(status=AgentRun.Status.ESCALATED, error=reason,
                                                  finished_at=timezone.now())
        ticket_move(run.ticket, TicketStatus.ESCALATED, actor=agent_actor(run), reason=reason[:500],
                    updates={"queue": "human"})
        publish_event("handoff", ticket_id=run.ticket_id, data={"from": run.agent.slug, "to": "human", "reason": reason})


def _fail(run: AgentRun, reason: str) -> None:
    with transaction.atomic():
        AgentRun.objects.filter(pk=run.pk).update(status=AgentRun.Status.FAILED, error=reason, finished_at=timezone.now())
        record_step(run, kind=RunStep.Kind.NOTE, name="failed", status=RunStep.Status.ERROR, error=reason)
        ticket_move(run.ticket, TicketStatus.FAILED, actor=agent_actor(run), reason=reason[:500])


def _on_queues(queues: list[str]) -> Q:
    return Q(agent__queue__in=queues) | Q(agent__queue="", agent__slug__in=queues)


def queued_runs(queues: Iterable[str]) -> list[int]:
    """Runs on these queues waiting for a delivery, oldest first.

    At a worker's start their messages may be in the queue, or lost: Redis keeps a message that a
    stopped worker had taken but not acknowledged aside for its visibility timeout (an hour by
    default), and a broker incident can drop a publish. Delivering one twice is harmless: the second
    delivery finds the run finished, waiting for approval, or locked by the first (``execute_run``).
    """
    return list(AgentRun.objects.filter(_on_queues(list(queues)), status=AgentRun.Status.QUEUED)
                .order_by("pk").values_list("pk", flat=True))


def recover_orphaned_runs(queues: Iterable[str]) -> list[int]:
    """Runs on these queues left ``running`` by a delivery that ended without recording its end.

    A worker stopped mid-run (killed, or a task that ended during a warm shutdown without its
    failure handler recording anything, as seen once) leaves the run ``running`` and its ticket
    ``in_progress``, and the broker may never deliver that message again (a failed task is
    acknowledged). A run whose
    advisory lock nobody holds is not being executed by anyone, so it counts as a failed delivery:
    it is retried visibly or, past the delivery cap, failed. Returns the ids the caller re-enqueues.
    """
    candidates = AgentRun.objects.filter(_on_queues(list(queues)), status=AgentRun.Status.RUNNING).values_list(
        "pk", flat=True)
    requeue = []
    for run_id in list(candidates):
        with run_lock(run_id) as got:
            if not got:
                continue  # a worker is executing it now
            if not AgentRun.objects.filter(pk=run_id, status=AgentRun.Status.RUNNING).exists():
                continue
            if run_attempt_failed(run_id, "the worker stopped during this run", final=False):
                requeue.append(run_id)
    return requeue


def run_attempt_failed(run_id: int, error: str, *, final: bool) -> bool:
    """A delivery crashed (model error, soft time limit...): retry visibly or fail with the reason.

    Returns True when the caller should re-enqueue the run.
    """
    with transaction.atomic():
        run = AgentRun.objects.select_for_update().select_related("agent", "ticket").get(pk=run_id)
        if run.status in AgentRun.TERMINAL or run.status == AgentRun.Status.AWAITING_APPROVAL:
            return False
        if final or run.attempts >= MAX_DELIVERIES:
            _fail(run, error)
            return False
        AgentRun.objects.filter(pk=run.pk).update(status=AgentRun.Status.QUEUED, error=error)
        record_step(run, kind=RunStep.Kind.NOTE, name="retry", status=RunStep.Status.ERROR, error=error)
        ticket_move(run.ticket, TicketStatus.RETRYING, actor=agent_actor(run),
                    reason=f"attempt {run.attempts} failed: {error}"[:500])
        return True
