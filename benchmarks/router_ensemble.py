"""What an ensemble of router checkpoints reads on validation: the level a distilled student aims at.

    python benchmarks/router_ensemble.py var/router_teachers/t1 ... [--json out.json]

Each checkpoint alone, then the mean of their class probabilities at the distillation
temperature (the distribution a student is trained towards), then the ensemble without each
member in turn (what one member adds). Intent accuracy is the argmax over the 77 intents on the
1,003 in-domain validation queries; queue accuracy is the queue with the largest summed
probability, as the router decides it before its human threshold.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from router_eval import checkpoints_args, router_logits, router_meta

from moe_engine import load_model
from moe_engine.data.banking77 import load_splits
from moe_engine.data.router import queue_probs

DISTILL_TEMPERATURE = 2.0


def accuracies(probs: torch.Tensor, id2label: dict[int, str], iq: dict[str, str], gold: list[str]) -> dict:
    in_domain = torch.tensor([id2label[i] in iq for i in range(probs.shape[1])])
    intent = probs.masked_fill(~in_domain, -1).argmax(-1)
    names, qp = queue_probs(probs, id2label, iq, "out_of_domain")
    queue = qp.argmax(-1)
    return {"intent": sum(id2label[int(i)] == g for i, g in zip(intent, gold, strict=True)) / len(gold),
            "queue": sum(names[int(q)] == iq[g] for q, g in zip(queue, gold, strict=True)) / len(gold)}


def main() -> None:
    a = checkpoints_args(__doc__.splitlines()[0])
    _, val = load_splits()
    texts, gold = [t for t, _ in val], [y for _, y in val]
    probs, id2label = {}, None
    for path in a.checkpoints:
        model = load_model(path)
        if id2label is not None and model.config.id2label != id2label:
            raise SystemExit(f"{path}: its labels differ from {a.checkpoints[0]}'s")
        id2label = model.config.id2label
        probs[path] = torch.softmax(router_logits(model, texts) / DISTILL_TEMPERATURE, -1)
    iq = router_meta(a.checkpoints[0])["intent_queue"]
    out = {"members": {p: accuracies(pr, id2label, iq, gold) for p, pr in probs.items()}}
    out["ensemble"] = accuracies(torch.stack(list(probs.values())).mean(0), id2label, iq, gold)
    if len(probs) > 2:
        out["without"] = {p: accuracies(torch.stack([q for k, q in probs.items() if k != p]).mean(0), id2label, iq, gold)
                          for p in probs}
    for p, r in out["members"].items():
        print(f"{p}: intent {r['intent']:.1%}, queue {r['queue']:.1%}")
    print(f"ensemble of {len(probs)}: intent {out['ensemble']['intent']:.1%}, queue {out['ensemble']['queue']:.1%}")
    for p, r in out.get("without", {}).items():
        print(f"  without {p}: intent {r['intent']:.1%}, queue {r['queue']:.1%}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
