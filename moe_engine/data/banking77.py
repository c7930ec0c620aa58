"""Banking77 train/validation split and the out-of-domain examples the router learns to refuse.

The validation split is a deterministic stratified hold-out (10% of every intent, fixed seed),
written once to ``data/banking77/splits.json``; models are tuned on it and never trained on it.
Out-of-domain text is our own writing (``data/ood/``): a training seed list that is augmented
here, and a separate validation list that is used only for evaluation and threshold choice.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "data"
OOD_LABEL = "out_of_domain"
HUMAN_QUEUE = "human"


def read_rows(path: Path = ROOT / "banking77" / "train.csv") -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"].strip(), r["category"].strip()) for r in csv.DictReader(f)]


def queues(path: Path = ROOT / "banking77" / "queues.json") -> dict[str, str]:
    return json.loads(path.read_text())


def make_splits(rows: list[tuple[str, str]], *, fraction: float = 0.1, seed: int = 0) -> list[int]:
    """Row indices of the validation split: round(fraction * n) rows of every intent."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, (_, label) in enumerate(rows):
        by_label.setdefault(label, []).append(i)
    val: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        val += rng.sample(idx, max(1, round(fraction * len(idx))))
    return sorted(val)


def load_splits(path: Path = ROOT / "banking77" / "splits.json") -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, validation) rows of Banking77 as (text, intent)."""
    rows = read_rows()
    spec = json.loads(path.read_text())
    val_idx = set(spec["validation_rows"])
    for i, text in spec["validation_texts"][:20]:
        # the split file pins rows by index; a changed train.csv must not silently shift it
        if rows[i][0] != text:
            raise ValueError(f"{path}: row {i} is {rows[i][0]!r}, split expects {text!r}")
    train = [r for i, r in enumerate(rows) if i not in val_idx]
    val = [rows[i] for i in sorted(val_idx)]
    return train, val


_PREFIXES = ("", "", "", "hey ", "hi, ", "quick question: ", "please ", "can you tell me ", "hello! ", "um ")
_SUFFIXES = ("", "", "", " thanks", " please", "?", " asap", " :)", "!!")

_TOPIC_TEMPLATES = (
    "how do I {verb} my {thing}?",
    "my {thing} is broken, can you help",
    "what is the best {thing} to buy this year",
    "where can I {verb} a {thing} near me",
    "is it normal for a {thing} to make that noise",
    "can you recommend a {thing}",
    "I need to {verb} my {thing} before friday",
)
_VERBS = ("fix", "clean", "repair", "paint", "sell", "replace", "upgrade", "wash", "rent", "find")
_THINGS = (
    "bike", "fridge", "garden fence", "guitar", "dishwasher", "lawn mower", "kitchen", "bathroom",
    "laptop", "tent", "car", "sofa", "roof", "piano", "fish tank", "printer", "washing machine",
    "hair dryer", "skateboard", "telescope", "camera", "drone", "treadmill", "boat", "chimney",
)


def _noisy(text: str, rng: random.Random) -> str:
    t = rng.choice(_PREFIXES) + text + rng.choice(_SUFFIXES)
    if rng.random() < 0.3:
        t = t.lower()
    if rng.random() < 0.2:
        t = t.rstrip("?!.")
    if rng.random() < 0.15 and len(t) > 8:
        i = rng.randrange(1, len(t) - 2)
        t = t[:i] + t[i + 1] + t[i] + t[i + 2 :]  # a typo: swap two letters
    return t.strip()


def _lines(name: str) -> list[str]:
    return [t for t in (ROOT / "ood" / name).read_text().splitlines() if t.strip()]


def ood_texts(split: str, *, n_augmented: int = 700, seed: int = 0, extra: bool = False) -> list[str]:
    """Out-of-domain requests: 'train' (seed list + noisy variants + templates) or 'validation'.

    ``extra`` adds ``train_extra.txt`` (181 more requests: everyday, travel, health, home, devices,
    and near misses such as parcels, subscriptions and utilities) to the training seed list.
    """
    if split == "validation":
        return _lines("val.txt")
    if split != "train":
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    rng = random.Random(seed)
    base = _lines("train_seed.txt") + (_lines("train_extra.txt") if extra else [])
    out = list(base)
    while len(out) < len(base) + n_augmented:
        if rng.random() < 0.6:
            out.append(_noisy(rng.choice(base), rng))
        else:
            out.append(_noisy(rng.choice(_TOPIC_TEMPLATES).format(verb=rng.choice(_VERBS), thing=rng.choice(_THINGS)), rng))
    return out


def write_query_lm_data(out: Path, *, n_ood_augmented: int = 1500, end: str = "<|end|>") -> dict[str, int]:
    """The router's query LM data: ``train.jsonl`` (the training queries and the out-of-domain
    training texts) and ``validation.jsonl`` (the validation queries), one
    ``{"prompt": "Query:", "completion": " <text><end>"}`` line each. ``end`` is the router
    tokenizer's end-of-text token, so the LM learns where a query stops and can be sampled."""
    train, val = load_splits()
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": [t for t, _ in train] + ood_texts("train", n_augmented=n_ood_augmented),
              "validation": [t for t, _ in val]}
    for name, texts in splits.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"prompt": "Query:", "completion": " " + t + end}) + "\n" for t in texts)
    return {name: len(texts) for name, texts in splits.items()}


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="write the validation split (splits.json) or the query LM's data")
    ap.add_argument("what", nargs="?", choices=["splits", "query-lm-data"], default="splits")
    ap.add_argument("--out", type=Path, default=Path("var/router_query_lm_data"), help="for query-lm-data")
    ap.add_argument("--end", default="<|end|>", help="for query-lm-data: the end-of-text token ('' for none, "
                    "the query LM before 2026-12-03)")
    a = ap.parse_args(argv)
    if a.what == "query-lm-data":
        print(f"wrote {a.out}: {write_query_lm_data(a.out, end=a.end)}")
        return
    rows = read_rows()
    val = make_splits(rows)
    spec = {
        "source": "data/banking77/train.csv",
        "method": "stratified: round(10%) of every intent, random.Random(0).sample per intent in sorted label order",
        "seed": 0,
        "fraction": 0.1,
        "validation_rows": val,
        "validation_texts": [[i, rows[i][0]] for i in val],
    }
    out = ROOT / "banking77" / "splits.json"
    out.write_text(json.dumps(spec, ensure_ascii=False, indent=0) + "\n")
    print(f"wrote {out}: {len(val)} validation rows of {len(rows)}")


if __name__ == "__main__":
    main()
