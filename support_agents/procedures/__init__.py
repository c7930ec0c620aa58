"""Agent operating procedures: data (one per agent and intent) plus a tiny expression language.

A definition::

    {"agent": "billing", "intent": "request_refund", "summary": "...",
     "extract": ["merchant", "amount"],            # fields the model extracts from the ticket
     "steps": [                                     # run in order; each may have "when"
        {"id": "txn", "tool": "lookup_transactions", "args": {"merchant": "$args.merchant"},
         "on_error": "continue" | "escalate" | "fail"},      # default escalate
        {"id": "x", "when": {...}, "escalate": "reason"},
        {"id": "y", "when": {...}, "handoff": {"to": "billing", "intent": "...", "reason": "..."}}],
     "facts": {"refund_amount": "$results.refund.refund_amount"}}   # what the reply may state

Values starting with "$" are paths into the run scope (ticket, customer, args, results, errors,
context); "a|b" takes the first present one; anything else is a literal. Conditions:
{"path", "eq"|"ne"|"gte"|"lte"|"present"|"contains_any"}, {"all": [...]}, {"any": [...]}, {"not": c}.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
STEP_KINDS = ("tool", "handoff", "escalate")
ON_ERROR = ("continue", "escalate", "fail")


def load_definitions() -> dict[str, list[dict]]:
    """{agent slug: [definition, ...]} from the data files shipped with the code."""
    out: dict[str, list[dict]] = {}
    for path in sorted(DATA_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        out[doc["agent"]] = doc["procedures"]
    return out


def validate_definition(defn: Any, *, tools: set[str] | None = None, fields: set[str] | None = None,
                        agents: set[str] | None = None) -> list[str]:
    """Field-level problems of a procedure definition (empty list = valid)."""
    if not isinstance(defn, dict):
        return ["definition: must be a JSON object"]
    errs = []
    if not isinstance(defn.get("intent"), str) or not defn.get("intent"):
        errs.append("intent: required string")
    extract = defn.get("extract", [])
    if not isinstance(extract, list) or not all(isinstance(f, str) for f in extract):
        errs.append("extract: must be a list of field names")
    elif fields is not None:
        errs += [f"extract: unknown field {f!r}" for f in extract if f not in fields]
    steps = defn.get("steps")
    if not isinstance(steps, list):
        errs.append("steps: required list")
        steps = []
    seen = set()
    for i, st in enumerate(steps):
        where = f"steps[{i}]"
        if not isinstance(st, dict):
            errs.append(f"{where}: must be an object")
            continue
        kinds = [k for k in STEP_KINDS if k in st]
        if len(kinds) != 1:
            errs.append(f"{where}: needs exactly one of {', '.join(STEP_KINDS)}")
            continue
        sid = st.get("id")
        if not isinstance(sid, str) or not sid:
            errs.append(f"{where}.id: required string")
        elif sid in seen:
            errs.append(f"{where}.id: duplicate {sid!r}")
        seen.add(sid)
        if "tool" in st:
            if tools is not None and st["tool"] not in tools:
                errs.append(f"{where}.tool: unknown tool {st['tool']!r}")
            if not isinstance(st.get("args", {}), dict):
                errs.append(f"{where}.args: must be an object")
        if "handoff" in st:
            h = st["handoff"]
            if not isinstance(h, dict) or not isinstance(h.get("to"), str):
                errs.append(f"{where}.handoff: needs 'to' (agent slug)")
            elif agents is not None and h["to"] not in agents:
                errs.append(f"{where}.handoff.to: unknown agent {h['to']!r}")
        if st.get("on_error", "escalate") not in ON_ERROR:
            errs.append(f"{where}.on_error: one of {', '.join(ON_ERROR)}")
        if "when" in st:
            errs += [f"{where}.when: {e}" for e in _cond_problems(st["when"])]
    facts = defn.get("facts", {})
    if not isinstance(facts, dict) or not all(isinstance(v, str) for v in facts.values()):
        errs.append("facts: must map names to strings")
    return errs


def _cond_problems(c: Any) -> list[str]:
    if not isinstance(c, dict):
        return ["must be an object"]
    if "all" in c or "any" in c:
        sub = c.get("all", c.get("any"))
        return ["all/any: must be a list"] if not isinstance(sub, list) else [p for s in sub for p in _cond_problems(s)]
    if "not" in c:
        return _cond_problems(c["not"])
    if not isinstance(c.get("path"), str):
        return ["path: required"]
    ops = {"eq", "ne", "gte", "lte", "present", "contains_any"} & set(c)
    return [] if len(ops) == 1 else ["needs exactly one of eq, ne, gte, lte, present, contains_any"]


def lookup(path: str, scope: dict) -> Any:
    cur: Any = scope
    for part in path.lstrip("$").split("."):
        cur = cur.get(part) if isinstance(cur, dict) else getattr(cur, part, None)
        if cur is None:
            return None
    return cur


def resolve(value: Any, scope: dict) -> Any:
    """Evaluate an argument/fact expression; None when every alternative is missing."""
    if isinstance(value, dict):
        return {k: resolve(v, scope) for k, v in value.items()}
    if not isinstance(value, str) or not value.startswith("$"):
        return value
    for alt in value.split("|"):
        got = lookup(alt, scope) if alt.startswith("$") else alt
        if got not in (None, ""):
            return got
    return None


def _num(v: Any) -> Decimal | None:
    try:
        return Decimal(str(v))
    except (InvalidOperation, ValueError):
        return None


def check(cond: dict | None, scope: dict) -> bool:
    if cond is None:
        return True
    if "all" in cond:
        return all(check(c, scope) for c in cond["all"])
    if "any" in cond:
        return any(check(c, scope) for c in cond["any"])
    if "not" in cond:
        return not check(cond["not"], scope)
    v = resolve(cond["path"], scope)
    if "present" in cond:
        return (v not in (None, "")) == bool(cond["present"])
    if "eq" in cond:
        return v == cond["eq"]
    if "ne" in cond:
        return v != cond["ne"]
    if "contains_any" in cond:
        text = str(v or "").lower()
        return any(str(w).lower() in text for w in cond["contains_any"])
    a, b = _num(v), _num(cond.get("gte", cond.get("lte")))
    if a is None or b is None:
        return False
    return a >= b if "gte" in cond else a <= b


# a stored status name ("pending_closure", "not_activated"): the customer reads "pending closure"
_STATUS_NAME = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


def render_facts(facts: dict[str, str], scope: dict) -> dict[str, str]:
    """Flat string facts for the reply; missing values are left out rather than invented, and status
    names from the bank's tables are written as words."""
    out = {}
    for key, expr in facts.items():
        v = resolve(expr, scope)
        if v not in (None, "", "none"):
            out[key] = _STATUS_NAME.sub(lambda m: m.group(0).replace("_", " "), str(v))
    return out
