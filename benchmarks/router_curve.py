"""Router checkpoints on validation at every human threshold: in-domain queue accuracy vs catch.

    python benchmarks/router_curve.py checkpoints/router var/other_router [--json out.json]

For each checkpoint (with its own fitted temperature) and each threshold 0.20..0.95 in steps of
0.01: in-domain queue accuracy (after the human rule) and out-of-domain catch rate on the
validation split. With two or more checkpoints it also says whether the last one dominates the
first: for every threshold of the first, some threshold of the last is at least as good on both.
"""
from __future__ import annotations

import json
from pathlib import Path

from router_eval import checkpoints_args, router_logits, router_meta

from moe_engine import load_model
from moe_engine.data.banking77 import load_splits, ood_texts
from moe_engine.data.router import HUMAN, decide

THRESHOLDS = [k / 100 for k in range(20, 96)]


def curve(path: str, texts: list[str], n_in: int, gold: list[str]) -> list[dict]:
    model = load_model(path)
    meta = router_meta(path)
    logits = router_logits(model, texts)
    rows = []
    for t in THRESHOLDS:
        queues = [d.queue for d in decide(logits, dict(meta, human_threshold=t), model.config.id2label)]
        rows.append({"threshold": t,
                     "in_domain_queue": sum(q == g for q, g in zip(queues[:n_in], gold, strict=True)) / n_in,
                     "ood_catch": sum(q == HUMAN for q in queues[n_in:]) / (len(texts) - n_in)})
    return rows


def main() -> None:
    a = checkpoints_args(__doc__.splitlines()[0])
    _, val = load_splits()
    texts = [t for t, _ in val] + ood_texts("validation")
    out = {}
    for path in a.checkpoints:
        iq = router_meta(path)["intent_queue"]
        out[path] = curve(path, texts, len(val), [iq[y] for _, y in val])
        print(path)
        for r in out[path][::5]:
            print(f"  threshold {r['threshold']:.2f}: in-domain queue {r['in_domain_queue']:.1%}, catch {r['ood_catch']:.1%}")
    if len(a.checkpoints) > 1:
        first, last = out[a.checkpoints[0]], out[a.checkpoints[-1]]
        beaten = [r["threshold"] for r in first if not any(
            s["in_domain_queue"] >= r["in_domain_queue"] and s["ood_catch"] >= r["ood_catch"] for s in last)]
        print(f"{a.checkpoints[-1]} dominates {a.checkpoints[0]}: {not beaten}"
              + (f" (not at thresholds {beaten})" if beaten else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
