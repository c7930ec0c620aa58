"""Load the shipped procedure files into AgentProcedure rows (also used by migration 0003)."""
from __future__ import annotations

from typing import Any

from . import load_definitions

# Tools the pipeline adds to the seeded allow-lists (the foundation's seed predates them).
EXTRA_TOOLS = {"billing": ["close_account", "kb_search"], "technical": [], "sales": ["supported_currencies", "kb_search"]}


def default_procedure(slug: str) -> dict:
    """For intents an agent has no procedure for (e.g. after an operator reassigns): answer from the KB."""
    return {"agent": slug, "intent": "_default", "summary": "General question: answer from the knowledge base.",
            "extract": [], "steps": [{"id": "kb", "tool": "kb_search", "args": {"query": "$ticket.body"},
                                      "on_error": "continue"}],
            "facts": {"answer": "$results.kb.answer", "article": "$results.kb.article"}}


def procedures_seed(AgentProfile: Any, AgentProcedure: Any, *, overwrite: bool = False) -> int:  # noqa: N803
    """Create missing procedures (or overwrite all); returns rows written. Models passed in for migrations."""
    written = 0
    defs = load_definitions()
    for profile in AgentProfile.objects.all():
        extra = [t for t in EXTRA_TOOLS.get(profile.slug, []) if t not in (profile.tools or [])]
        if extra:
            profile.tools = [*(profile.tools or []), *extra]
            profile.save(update_fields=["tools"])
        for defn in [*defs.get(profile.slug, []), default_procedure(profile.slug)]:
            if overwrite:
                AgentProcedure.objects.update_or_create(agent=profile, intent=defn["intent"],
                                                        defaults={"definition": defn, "enabled": True})
                written += 1
            else:
                _, created = AgentProcedure.objects.get_or_create(agent=profile, intent=defn["intent"],
                                                                  defaults={"definition": defn})
                written += int(created)
    return written
