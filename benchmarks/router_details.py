"""Router checkpoints on validation queries as written and with the details real tickets carry.

    python benchmarks/router_details.py checkpoints/router var/other_router [--json out.json]

Banking77's queries are bare problem statements; tickets also hold amounts, merchants, dates, card
digits and references. Three views of the held-out validation queries, each paired with the same
queries as written (so every difference is the details' doing):
- "slot sentences": the agent-model generator's extraction texts (``support_agents.language.synth``,
  seed 0): its slot sentences for the intent's family ("It was 45.00 at Tesco on 3 March.") before
  or after the query, and half of the time the amount in the query's own noun phrase;
- "amount in the query": only the amount, written into the query's own noun phrase or paying verb;
- all 1,003 as written, for the plain figures.
Decisions use each checkpoint's own temperature and human threshold (``moe_engine.data.router.decide``).
The sentences come from the agent generator, not from the router's training augmentation
(``moe_engine.data.details``), so a router trained with details is not tested on its own templates.
"""
from __future__ import annotations

import json
import random
from datetime import date
from pathlib import Path

from router_eval import checkpoints_args, router_decisions, router_meta

from moe_engine.data.banking77 import load_splits
from support_agents.language import synth

TODAY = date(2026, 11, 23)


def views() -> dict[str, tuple[list[str], list[str], list[str]]]:
    """name -> (texts with details, the same queries as written, gold intents)."""
    _, val = load_splits()
    rng = random.Random(0)
    slot, amount = ([], [], []), ([], [], [])
    for text, intent in val:
        if intent not in synth.FAMILY_OF or not synth.safe_query(text):
            continue
        ex = synth.extraction_example(text, intent, rng, TODAY, synth.Variety(bare_amounts=0.3, amounts_in_query=0.5))
        if ex["text"] != text:
            for lst, v in zip(slot, (ex["text"], text, intent), strict=True):
                lst.append(v)
        vals = synth._slot_values(rng, TODAY)
        if inserted := synth._amount_into_query(text, synth.FAMILY_OF[intent], vals, rng, 0.3):
            for lst, v in zip(amount, (inserted[0], text, intent), strict=True):
                lst.append(v)
    plain = [t for t, _ in val]
    return {"slot sentences": slot, "amount in the query": amount, "all, as written": (plain, plain, [i for _, i in val])}


def score(path: str, sets: dict) -> dict:
    iq = router_meta(path)["intent_queue"]
    out = {}
    for name, (detailed, plain, gold) in sets.items():
        row = {"n": len(gold)}
        for label, texts in (("with_details", detailed), ("as_written", plain)):
            ds = router_decisions(path, texts)
            row[label] = {"intent": sum(d.intent == g for d, g in zip(ds, gold, strict=True)) / len(gold),
                          "queue": sum(d.queue == iq[g] for d, g in zip(ds, gold, strict=True)) / len(gold)}
        out[name] = row
    return out


def main() -> None:
    a = checkpoints_args(__doc__.splitlines()[0])
    sets = views()
    results = {}
    for path in a.checkpoints:
        results[path] = score(path, sets)
        print(path)
        for name, r in results[path].items():
            w, s = r["with_details"], r["as_written"]
            print(f"  {name} (n={r['n']}): intent {s['intent']:.1%} -> {w['intent']:.1%}, "
                  f"queue {s['queue']:.1%} -> {w['queue']:.1%} (as written -> with details)")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
