"""The agents' language functions, run by any ``moe_engine`` model (or its batching engine)."""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from . import prompts
from .constrained import extraction_constraint, sentence_constraint
from .faithfulness import (
    faithfulness_problems,
    greeting_name,
    intent_topic,
    with_greeting_name,
    with_intent_topic,
)
from .fields import FIELDS, PRODUCTS, grounded, normalize
from .phrasing import CLOSERS, fact_sentences, openings


@dataclass
class ModelCall:
    """One generation, for the run's audit trail (tokens, latency, routing summary come from usage)."""

    task: str
    prompt: str
    completion: str
    seconds: float
    usage: Any = None
    routing: Any = None


@dataclass
class Reply:
    text: str
    faithful: bool
    problems: list[str] = field(default_factory=list)


def complete_batch(model: Any, prompt_texts: list[str], *, max_new_tokens: int,
                   constraints: list[Any] | None = None, temperature: float = 0.0,
                   seed: int | None = None) -> tuple[list[str], Any]:
    """Completions of several prompts in one batched ``model.generate``; cut at the END marker.

    Greedy by default; with ``temperature`` > 0, nucleus sampling (top-p 0.95) seeded by ``seed``.
    ``constraints``: one token constraint (see ``constrained``) or None per prompt.
    """
    tok = model.tokenizer
    ids = [tok.encode(p) for p in prompt_texts]
    kw = {"constraints": constraints} if constraints is not None and any(c is not None for c in constraints) else {}
    if temperature > 0:
        kw.update(top_p=0.95, seed=seed)
    out = model.generate(ids, max_new_tokens=max_new_tokens, temperature=temperature, stop=[prompts.END], **kw)
    # keep special tokens while decoding so the END marker itself is seen and cut
    # NUL is a valid byte for a byte-level tokenizer but never part of a reply, and PostgreSQL stores
    # neither it in text nor \u0000 in jsonb: a sampled draft from a weak model can produce one.
    texts = [tok.decode(list(t), skip_special_tokens=False).split(prompts.END, 1)[0].replace("\x00", "")
             for t in out.tokens]
    return texts, out


def complete(model: Any, prompt: str, *, max_new_tokens: int, trace: list[ModelCall] | None = None,
             task: str = "", constraint: Any = None, temperature: float = 0.0, seed: int | None = None) -> str:
    """Completion of one prompt through ``model.generate`` (see ``complete_batch``); stops at the END marker."""
    t0 = time.perf_counter()
    (text,), out = complete_batch(model, [prompt], max_new_tokens=max_new_tokens, constraints=[constraint],
                                  temperature=temperature, seed=seed)
    if trace is not None:
        usage = out.usage[0] if getattr(out, "usage", None) else None
        routing = out.routing[0] if getattr(out, "routing", None) else None
        trace.append(ModelCall(task, prompt, text, time.perf_counter() - t0, usage, routing))
    return text


def check_fields(fields: list[str]) -> None:
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise ValueError(f"unknown fields {unknown}; known: {', '.join(FIELDS)}")


def extraction_budget(fields: list[str]) -> int:
    return 24 + 14 * len(fields)


def arguments_from_completion(completion: str, *, text: str, fields: list[str], today: date | None = None
                              ) -> dict[str, str | None]:
    """Parse, ground and normalise an extraction completion (see ``extract_arguments``)."""
    raw = prompts.parse_extraction(completion, fields)
    return {
        f: (normalize(f, v, today) if v is not None and grounded(f, v, text) else None) for f, v in raw.items()
    }


def extract_arguments(
    model: Any,
    *,
    intent: str,
    text: str,
    fields: list[str],
    today: date | None = None,
    trace: list[ModelCall] | None = None,
    constrained: bool = True,
) -> dict[str, str | None]:
    """Values for ``fields`` (from FIELDS) found in the customer's text, normalised; None if absent.

    Decoding is constrained (``constrained.ExtractionConstraint``): the model writes the JSON object
    for exactly these fields and each value is null or a span of the text valid for its field. The
    value is still checked afterwards (well-formed, occurs in the text), so a hallucinated amount or
    card number never reaches a tool even with ``constrained=False``.
    """
    check_fields(fields)
    if not fields:
        return {}
    constraint = extraction_constraint(model, text, fields, today) if constrained else None
    completion = complete(model, prompts.extract_prompt(intent, text, fields), max_new_tokens=extraction_budget(fields),
                          trace=trace, task="extract_arguments", constraint=constraint)
    return arguments_from_completion(completion, text=text, fields=fields, today=today)


def context_room(model: Any, prompt: str) -> int:
    """New tokens that fit after ``prompt`` in the model's context (or its serving engine's)."""
    limit = getattr(model, "max_len", None) or getattr(model.config, "max_position_embeddings", None)
    return max(1, limit - len(model.tokenizer.encode(prompt)) - 2) if limit else 1 << 30


def reply_budget(model: Any, facts: Mapping[str, str], customer_name: str, intent: str) -> int:
    """New tokens enough for the longest reply the sentence constraint allows: the longest opening,
    every fact in its longest phrasing and the longest closing (a fixed budget cut long replies).
    Generated text can take more tokens than its best encoding (the model may spell a word in
    pieces), hence the margin; decoding stops at the end token anyway."""
    longest = [max(openings(greeting_name(customer_name), intent_topic(intent)), key=len),
               *(max(fact_sentences(k, str(v)), key=len) for k, v in facts.items()), max(CLOSERS, key=len)]
    return len(model.tokenizer.encode(" ".join(longest), add_special_tokens=False)) * 3 // 2 + 16


# A draft the pipeline cannot keep is redrafted by sampling (top-p 0.95) at this temperature.
REDRAFT_TEMPERATURE = 0.8


def reply_from_completion(completion: str, *, customer_name: str, facts: Mapping[str, str],
                          products: Iterable[str] = PRODUCTS, intent: str | None = None) -> Reply:
    text = with_greeting_name(prompts.parse_reply(completion), customer_name)
    if intent is not None:
        text = with_intent_topic(text, intent)
    problems = faithfulness_problems(text, facts, customer_name=customer_name, products=products, intent=intent)
    if not text:
        problems.insert(0, "empty reply")
    if any(tok in text for tok in prompts.SPECIAL_TOKENS):
        problems.insert(0, "reply contains prompt markers")
    return Reply(text=text, faithful=not problems, problems=problems)


def write_reply(
    model: Any,
    *,
    customer_name: str,
    intent: str,
    facts: dict[str, str],
    message: str,
    products: Iterable[str] = PRODUCTS,
    trace: list[ModelCall] | None = None,
    constrained: bool = True,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Reply:
    """A reply written by the model from the facts, checked for faithfulness to them (greedy, or
    sampled with ``temperature`` and ``seed`` for another draft).

    Decoding is constrained (``constrained.ReplyConstraint``) so that numbers, dates, references,
    currencies and products can only be copied from the facts. ``faithful`` is still checked
    independently: it is False when the text names any amount, number, date, currency or product that
    is not among the facts (``problems`` lists each), or is empty; the caller then sends
    ``template_reply`` instead.
    """
    products = tuple(products)
    constraint = sentence_constraint(model, facts, customer_name, intent) if constrained else None
    prompt = prompts.reply_prompt(customer_name, intent, facts, message)
    budget = min(reply_budget(model, facts, customer_name, intent), context_room(model, prompt))
    completion = complete(model, prompt, max_new_tokens=budget, trace=trace, task="write_reply", constraint=constraint,
                          temperature=temperature, seed=seed)
    return reply_from_completion(completion, customer_name=customer_name, facts=facts, products=products,
                                 intent=intent)


def template_reply(*, customer_name: str, intent: str, facts: Mapping[str, str]) -> str:
    """The deterministic fallback: states the facts verbatim, so it is faithful by construction."""
    first = greeting_name(customer_name)
    lines = [f"Hi {first},", f"Thanks for contacting us about {intent_topic(intent)}. Here is what we found:"]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in facts.items()]
    lines.append("Reply to this message if anything is still unclear.")
    return "\n".join(lines)
