"""Evaluate an agent checkpoint on held-out examples: extraction exact match and reply faithfulness.

    python -m support_agents.language.evaluate --model checkpoints/agent \\
        --data var/agent_data2/validation.jsonl --out checkpoints/agent/eval.json [--unconstrained] [--solo 50]

Held-out examples come from ``synth`` over the Banking77 validation queries (never trained on).
Extraction exact match: the normalised arguments equal the expected ones for every requested field
(None included). Faithfulness: the share of model replies with no faithfulness problem. We also
report how often a reply mentions every fact value (specificity), how many replies the pipeline
keeps (faithful and no missing facts, ``missing_facts``; after ``--redrafts N`` sampled redrafts as
well), and examples of failures.

Decoding is constrained as in the pipeline (``constrained``) unless ``--unconstrained``. Seconds are
wall time on one thread (``torch.set_num_threads(1)``) for batches of 32, constraint building
included; ``--solo N`` also times N calls of ``extract_arguments`` / ``write_reply`` one at a time,
as the pipeline makes them.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from . import prompts
from .api import (
    REDRAFT_TEMPERATURE,
    arguments_from_completion,
    complete_batch,
    context_room,
    extract_arguments,
    extraction_budget,
    reply_budget,
    reply_from_completion,
    write_reply,
)
from .constrained import extraction_constraint, sentence_constraint
from .faithfulness import intent_topic, missing_facts, opening_topic
from .synth import FAMILY_FIELDS, FAMILY_OF, PROCEDURES


def _replies(model: Any, chunk: list[dict], *, constrained: bool, temperature: float = 0.0,
             seed: int | None = None) -> tuple[list[Any], Any, list[bool]]:
    """Replies, the generation output, and per reply whether its opening named another intent's topic
    (which ``reply_from_completion`` corrects)."""
    cons = ([sentence_constraint(model, e["facts"], e["customer_name"], e["intent"]) for e in chunk]
            if constrained else None)
    budget = min(max(reply_budget(model, e["facts"], e["customer_name"], e["intent"]) for e in chunk),
                 *(context_room(model, e["prompt"]) for e in chunk))
    texts, out = complete_batch(model, [e["prompt"] for e in chunk], max_new_tokens=budget, constraints=cons,
                                temperature=temperature, seed=seed)
    replies = [reply_from_completion(c + prompts.END, customer_name=e["customer_name"], facts=e["facts"],
                                     intent=e["intent"])
               for e, c in zip(chunk, texts, strict=True)]
    named = [opening_topic(prompts.parse_reply(c + prompts.END)) for c in texts]
    corrected = [n is not None and n[0] != intent_topic(e["intent"]) for e, n in zip(chunk, named, strict=True)]
    return replies, out, corrected


def _kept(reply: Any, facts: dict) -> bool:
    """What the pipeline keeps rather than replace by the fact template (procedures without `must_state`)."""
    return reply.faithful and not missing_facts(reply.text, facts)


def field_misses(model: Any, field: str, cases: Sequence[tuple[str, str, str | None]], *,
                 today: date | None = None) -> list[tuple[str, str | None]]:
    """(text, value read) for each (intent, text, expected value) case where the model misses ``field``,
    asked together with the fields the intent's procedure asks for, as the pipeline asks."""
    missed = []
    for intent, text, want in cases:
        fields = list(PROCEDURES.get(intent, {}).get("extract", [])) or list(FAMILY_FIELDS[FAMILY_OF[intent]])
        got = extract_arguments(model, intent=intent, text=text, fields=sorted({field, *fields}), today=today)[field]
        if got != want:
            missed.append((text, got))
    return missed


def evaluate(model: Any, examples: list[dict], *, today: date, batch_size: int = 32, constrained: bool = True,
             solo: int = 0, redrafts: int = 0) -> dict[str, Any]:
    ext = [e for e in examples if e["task"] == "extract"]
    rep = [e for e in examples if e["task"] == "reply"]
    t0 = time.perf_counter()
    exact = 0
    by_field: dict[str, list[int]] = {}  # field -> [right, asked, right where the text has a value, such cases]
    failures: list[dict] = []
    dead_ends = 0
    for s in range(0, len(ext), batch_size):
        chunk = ext[s : s + batch_size]
        budget = max(extraction_budget(e["fields"]) for e in chunk)
        cons = [extraction_constraint(model, e["text"], e["fields"], today) for e in chunk] if constrained else None
        texts, out = complete_batch(model, [e["prompt"] for e in chunk], max_new_tokens=budget, constraints=cons)
        dead_ends += out.finish_reasons.count("constraint")
        for e, c in zip(chunk, texts, strict=True):
            got = arguments_from_completion(c, text=e["text"], fields=e["fields"], today=today)
            ok = got == e["expected"]
            exact += ok
            for f in e["fields"]:
                counts = by_field.setdefault(f, [0, 0, 0, 0])
                counts[0] += got[f] == e["expected"][f]
                counts[1] += 1
                if e["expected"][f] is not None:
                    counts[2] += got[f] == e["expected"][f]
                    counts[3] += 1
            if not ok and len(failures) < 8:
                failures.append({"text": e["text"], "expected": e["expected"], "got": got, "completion": c})
    t_ext = time.perf_counter() - t0
    t0 = time.perf_counter()
    faithful = complete_mentions = corrected = 0
    rep_failures: list[dict] = []
    samples: list[str] = []
    not_kept: list[dict] = []
    for s in range(0, len(rep), batch_size):
        chunk = rep[s : s + batch_size]
        replies, out, fixed = _replies(model, chunk, constrained=constrained)
        dead_ends += out.finish_reasons.count("constraint")
        corrected += sum(fixed)
        for e, r in zip(chunk, replies, strict=True):
            faithful += r.faithful
            if not _kept(r, e["facts"]):
                not_kept.append(e)
            complete_mentions += all(str(v) in r.text for v in e["facts"].values())
            if len(samples) < 3:
                samples.append(r.text)
            if not r.faithful and len(rep_failures) < 8:
                rep_failures.append({"facts": e["facts"], "reply": r.text, "problems": r.problems})
    t_rep = time.perf_counter() - t0
    kept_greedy = len(rep) - len(not_kept)
    # As the runner does: each draft not kept is sampled again (one seed per redraft), up to `redrafts`.
    for attempt in range(1, redrafts + 1):
        replies = []
        for s in range(0, len(not_kept), batch_size):
            replies += _replies(model, not_kept[s : s + batch_size], constrained=constrained,
                                temperature=REDRAFT_TEMPERATURE, seed=1000 * attempt)[0]
        not_kept = [e for e, r in zip(not_kept, replies, strict=True) if not _kept(r, e["facts"])]
    timing = solo_timing(model, ext[:solo], rep[:solo], today=today, constrained=constrained) if solo else {}
    return {
        "constrained": constrained,
        "extraction_exact_match": exact / max(len(ext), 1),
        "extraction_field_accuracy": sum(c[0] for c in by_field.values()) / max(sum(c[1] for c in by_field.values()), 1),
        # a rare field's misses are lost in the overall figures
        "extraction_by_field": {f: {"accuracy": ok / n, "n": n, "accuracy_with_value": ok_v / max(n_v, 1), "n_with_value": n_v}
                                for f, (ok, n, ok_v, n_v) in sorted(by_field.items())},
        "n_extraction": len(ext),
        "reply_faithfulness": faithful / max(len(rep), 1),
        "reply_mentions_all_facts": complete_mentions / max(len(rep), 1),
        "reply_opening_topic_corrected": corrected / max(len(rep), 1),
        "reply_kept_by_pipeline": kept_greedy / max(len(rep), 1),
        **({f"reply_kept_after_{redrafts}_redrafts": 1 - len(not_kept) / max(len(rep), 1)} if redrafts else {}),
        "n_reply": len(rep),
        "seconds_extraction": round(t_ext, 1),
        "seconds_reply": round(t_rep, 1),
        "seconds_per_extraction_batched": round(t_ext / max(len(ext), 1), 4),
        "seconds_per_reply_batched": round(t_rep / max(len(rep), 1), 4),
        **timing,
        "constraint_dead_ends": dead_ends,
        "extraction_failures": failures,
        "reply_failures": rep_failures,
        "reply_samples": samples,
    }


def solo_timing(model: Any, ext: list[dict], rep: list[dict], *, today: date, constrained: bool) -> dict[str, Any]:
    """Mean seconds of single ``extract_arguments`` / ``write_reply`` calls (batch of one)."""
    def extraction(e: dict) -> None:
        extract_arguments(model, intent=e["intent"], text=e["text"], fields=e["fields"], today=today,
                          constrained=constrained)

    def reply(e: dict) -> None:
        write_reply(model, customer_name=e["customer_name"], intent=e["intent"], facts=e["facts"], message=e["text"],
                    constrained=constrained)

    # one untimed call of each first: a compiled decode step compiles its batch-of-one graph there
    for call, examples in ((extraction, ext[:1]), (reply, rep[:1])):
        for e in examples:
            call(e)
    t0 = time.perf_counter()
    for e in ext:
        extraction(e)
    t1 = time.perf_counter()
    for e in rep:
        reply(e)
    t2 = time.perf_counter()
    return {"solo_calls": len(ext), "seconds_per_extraction_solo": round((t1 - t0) / max(len(ext), 1), 4),
            "seconds_per_reply_solo": round((t2 - t1) / max(len(rep), 1), 4)}


def main(argv: list[str] | None = None) -> None:
    from moe_engine import load_model

    ap = argparse.ArgumentParser(description="evaluate the agent model on held-out language tasks")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None, help="evaluate the first N examples only")
    ap.add_argument("--today", default="2026-11-23")
    ap.add_argument("--card", action="store_true", help="append the results to the model's model_card.md")
    ap.add_argument("--unconstrained", action="store_true", help="plain greedy decoding (the pre-constraint baseline)")
    ap.add_argument("--solo", type=int, default=0, help="also time N single calls of each task (batch of one)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (timings in the docs use 1)")
    ap.add_argument("--redrafts", type=int, default=0,
                    help="also report the replies kept after N sampled redrafts of those not kept (the runner's "
                         "reply_retries)")
    ap.add_argument("--compile", action="store_true", help="compiled decode step, as the workers run it")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    model = load_model(a.model, compile=a.compile)
    examples = [json.loads(line) for line in a.data.read_text().splitlines() if line.strip()][: a.limit]
    res = evaluate(model, examples, today=date.fromisoformat(a.today), constrained=not a.unconstrained, solo=a.solo,
                   redrafts=a.redrafts)
    a.out.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    summary = {k: v for k, v in res.items() if not isinstance(v, list)}
    print(json.dumps(summary, indent=1))
    if a.card:
        write_card_section(a.model / "model_card.md", summary, res, " ".join(["python -m support_agents.language.evaluate",
                                                                            *(argv or __import__("sys").argv[1:])]))


CARD_HEADING = "## Task evaluation (held-out queries)"


def write_card_section(card: Path, summary: dict, res: dict, command: str) -> None:
    text = card.read_text() if card.is_file() else ""
    text = text.split(CARD_HEADING)[0].rstrip() + "\n\n"
    lines = [
        CARD_HEADING,
        "",
        "Examples generated by `support_agents.language.synth` from the Banking77 *validation* queries with a",
        "different seed (no query shared with training). Exact match: every requested field equal after",
        "normalisation (None included). Faithfulness (`faithfulness_problems` with the ticket's intent): no",
        "amount, number, date, currency or product that is not among the facts, the customer's name and the",
        "ticket's topic in the opening, and every sentence an opening, a closing or one of the facts in one",
        "of its phrasings (`phrasing`), none said twice.",
        "",
        "```",
        command,
        "```",
        "",
        "```json",
        json.dumps(summary, indent=1),
        "```",
        "",
        "Sample replies:",
        "",
        *[f"> {t}" + "\n" for t in res["reply_samples"]],
    ]
    if res["extraction_failures"]:
        lines += ["Some extraction misses:", "", "```json", json.dumps(res["extraction_failures"][:3], indent=1,
                                                                    ensure_ascii=False), "```", ""]
    if res["reply_failures"]:
        lines += ["Some unfaithful replies (the pipeline replaces these by the template):", "", "```json",
                  json.dumps(res["reply_failures"][:3], indent=1, ensure_ascii=False), "```", ""]
    card.write_text(text + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
