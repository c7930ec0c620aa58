"""Prompt formats of the agent model's two language tasks (training and inference share them).

Extraction::

    <|extract|>intent: card_payment_fee_charged
    fields: amount, currency, merchant, date
    text: I was charged a fee on my £23.50 payment to Tesco on 3 March.
    <|out|>{"amount": "23.50", "currency": "GBP", "merchant": "Tesco", "date": "3 March"}<|end|>

Values are copied as the customer wrote them (dates too); ``fields.normalize`` canonicalises them
afterwards, which keeps the model's job to copying spans, the part a small model does reliably.

Reply::

    <|reply|>customer: Alice Smith
    intent: card_payment_fee_charged
    facts: fee_amount = 0.50; currency = GBP; merchant = Tesco
    text: why was I charged a fee?
    <|out|>Hi Alice, ...<|end|>
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

EXTRACT = "<|extract|>"
REPLY = "<|reply|>"
OUT = "<|out|>"
END = "<|end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (PAD, EXTRACT, REPLY, OUT, END)

MAX_MESSAGE_CHARS = 320  # keeps prompt + completion within the agent model's training window
MAX_FACT_CHARS = 200  # tool sentences (KB answers, fee rules) must fit whole: replies quote them


def _clean(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    # markers in customer text must not be able to impersonate the prompt structure
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, " ")
    return " ".join(text.split())[:limit]


def extract_prompt(intent: str, text: str, fields: Sequence[str]) -> str:
    return f"{EXTRACT}intent: {_clean(intent, 60)}\nfields: {', '.join(fields)}\ntext: {_clean(text)}\n{OUT}"


def extract_completion(values: Mapping[str, str | None]) -> str:
    return json.dumps(dict(values), ensure_ascii=False) + END


def format_facts(facts: Mapping[str, str]) -> str:
    return "; ".join(f"{k} = {_clean(str(v), MAX_FACT_CHARS)}" for k, v in facts.items())


def reply_prompt(customer_name: str, intent: str, facts: Mapping[str, str], message: str) -> str:
    return (
        f"{REPLY}customer: {_clean(customer_name, 60)}\nintent: {_clean(intent, 60)}\n"
        f"facts: {format_facts(facts)}\ntext: {_clean(message)}\n{OUT}"
    )


def reply_completion(text: str) -> str:
    return text.strip() + END


def parse_extraction(completion: str, fields: Sequence[str]) -> dict[str, str | None]:
    """Raw values per requested field from a JSON-ish completion; fields it lacks are None.

    Tolerant of what a small model gets slightly wrong (a missing closing brace, text after the
    object): it falls back to reading ``"key": "value"`` / ``"key": null`` pairs one by one.
    """
    body = completion.split(END, 1)[0].strip()
    raw: dict[str, object] = {}
    try:
        obj = json.loads(body[body.index("{") : body.rindex("}") + 1])
        if isinstance(obj, dict):
            raw = obj
    except ValueError:
        for m in re.finditer(r'"(\w+)"\s*:\s*(null|"((?:[^"\\]|\\.)*)")', body):
            raw.setdefault(m.group(1), None if m.group(2) == "null" else m.group(3))
    out: dict[str, str | None] = {}
    for f in fields:
        v = raw.get(f)
        out[f] = None if v is None or isinstance(v, (dict, list)) else str(v)
    return out


def parse_reply(completion: str) -> str:
    return completion.split(END, 1)[0].strip()
