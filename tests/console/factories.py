"""Builds realistic run records directly (the pipeline's own tests cover producing them)."""

from __future__ import annotations

from decimal import Decimal

from support_agents.models import (
    AgentProfile,
    AgentRun,
    Approval,
    Customer,
    Handoff,
    Message,
    RunStep,
    Ticket,
)


def routing_record(layers: int = 2, experts: int = 4, tokens: list[str] | None = None, hot: int | None = None) -> dict:
    """Token-major ids [T][L][k] exactly as the pipeline stores them; `hot` sends every token's
    first choice to one expert (a collapsed router)."""
    tokens = tokens or ["I", " was", " charged", " twice"]
    if hot is None:
        ids = [[[(t + layer) % experts, (t + layer + 1) % experts] for layer in range(layers)]
               for t in range(len(tokens))]
    else:  # second choice never repeats the hot expert, like a real top-k
        ids = [[[hot, (hot + 1 + t % (experts - 1)) % experts] for _ in range(layers)] for t in range(len(tokens))]
    counts = [[0] * experts for _ in range(layers)]
    for tok in ids:
        for layer, choice in enumerate(tok):
            for e in choice:
                counts[layer][e] += 1
    return {"layers": layers, "experts": experts, "tokens_total": len(tokens), "expert_counts": counts,
            "ids": ids, "tokens": tokens}


def ticket_with_run(*, status: str = "in_progress", agent: str = "billing", subject: str = "Charged twice",
                    email: str = "ada@example.com") -> tuple[Ticket, AgentRun]:
    customer, _ = Customer.objects.get_or_create(email=email, defaults={"name": "Ada Lovelace"})
    profile = AgentProfile.objects.get(slug=agent)
    ticket = Ticket.objects.create(subject=subject, body="I was charged twice for one coffee.", customer=customer,
                                   status=status, queue=agent, intent="transaction_charged_twice",
                                   confidence=0.91, assigned_agent=profile)
    Message.objects.create(ticket=ticket, author_kind="customer", author_name="Ada Lovelace", body=ticket.body)
    Handoff.objects.create(ticket=ticket, from_label="router", to_agent=profile, to_label=agent,
                           reason="routed by triage (transaction_charged_twice, 0.91)",
                           context_summary={"intent": "transaction_charged_twice"})
    run = AgentRun.objects.create(ticket=ticket, agent=profile, intent="transaction_charged_twice",
                                  status="running", state={"n": 0})
    return ticket, run


def model_step(run: AgentRun, index: int, *, name: str = "extract", routing: dict | None = None,
               prompt_tokens: int = 40, completion_tokens: int = 10, flops: float = 2e9, dense_flops: float = 8e9,
               cost: str = "0.00001000", device_seconds: float = 0.5) -> RunStep:
    return RunStep.objects.create(
        run=run, index=index, kind="model", name=name, input={"prompt": "…"}, output={"completion": "…"},
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_ms=120.0,
        device_seconds=device_seconds, device="cpu", cost=Decimal(cost), flops=flops, dense_flops=dense_flops,
        active_params=1_000_000, total_params=4_000_000, routing=routing if routing is not None else routing_record())


def tool_step(run: AgentRun, index: int, *, name: str = "lookup_transactions", status: str = "ok",
              args: dict | None = None, result: dict | None = None, error: str = "") -> RunStep:
    return RunStep.objects.create(run=run, index=index, kind="tool", name=name, status=status,
                                  input=args or {"merchant": "Tesco"}, output=result or {"count": 2}, error=error)


def pending_refund(ticket: Ticket, run: AgentRun, *, amount: str = "250.00") -> Approval:
    Ticket.objects.filter(pk=ticket.pk).update(status="awaiting_approval")
    AgentRun.objects.filter(pk=run.pk).update(status="awaiting_approval")
    return Approval.objects.create(run=run, ticket=ticket, step_index=3, tool="issue_refund",
                                   args={"transaction_reference": "TT00001000", "amount": amount,
                                         "reason": "duplicate charge"},
                                   reason=f"refund {amount} is over the agent's limit 100.00")
