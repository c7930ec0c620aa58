"""Train the default models: an MoE router (sequence classification) or an MoE causal LM.

    python -m moe_engine.train --task classify --config configs/router.json --out checkpoints/router --seed 0
    python -m moe_engine.train --task lm --config configs/agent.json --out checkpoints/agent --seed 0

The config file holds ``model`` (a Hugging Face config.json; vocab size and labels are filled in
here), ``train`` (optimiser and schedule) and ``data`` (paths). Deterministic for a seed on CPU
(data order, init, dropout of words); on CUDA it trains under bf16 autocast. The loss adds the
Switch/Mixtral auxiliary load-balancing term; the progress bar shows the loss and each MoE layer's
balancedness (mean expert load / max load). Writes config.json, model.safetensors, the tokenizer,
model_card.md, metrics.json and routing_heatmap.png into --out.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.details import add_details
from .loader import build_model, save_checkpoint
from .model import Transformer
from .tokenizer import Tokenizer

DEFAULT_TRAIN = {
    "epochs": 10, "batch_size": 64, "lr": 2e-3, "min_lr_ratio": 0.05, "weight_decay": 0.05, "warmup_steps": 100,
    "grad_clip": 1.0, "aux_loss_coef": 0.01, "label_smoothing": 0.0, "word_dropout": 0.0, "max_len": 64,
    "max_minutes": None, "threads": None,
    # classification regularisers (0 = off): residual/embedding/pooled-feature dropout applied by
    # training-only hooks (the inference model has no dropout), a seeded BPE-dropout-like random
    # split of words into sub-pieces, lower-casing a share of the examples, an auxiliary loss on the
    # queue (summed intent probability) so mistakes stay inside the right queue, and an
    # exponential moving average of the weights that replaces them at the end
    "dropout": 0.0, "subword_split": 0.0, "lowercase": 0.0, "queue_loss_coef": 0.0, "ema_decay": 0.0,
    # knowledge distillation for classifiers: checkpoint directories of teachers trained on the same
    # training split (never on validation), the weight of their soft targets and the temperature
    "distill_from": [], "distill_weight": 0.0, "distill_temperature": 2.0,
    # With max_minutes, True decays the learning rate over the time budget (the run then depends on
    # machine speed: reproducible in distribution, not bit for bit). False keeps runs bit-exact.
    "schedule_by_time": False,
    # balance control (0 = off): while a MoE layer's running balancedness on the training batches is
    # under balance_target, that layer's aux-loss weight grows by exp(balance_gain) per step (and
    # shrinks back the same way above it), between aux_loss_coef and balance_max_factor times it.
    # A sign-driven update like DeepSeek-V3's bias balancing, but it acts through the loss, so the
    # checkpoint keeps the standard router (a selection bias would not survive in the HF format).
    "balance_target": 0.0, "balance_gain": 0.002, "balance_max_factor": 10.0,
    # the share of in-domain training examples that get ticket details (amounts, merchants, dates,
    # card digits, greetings) written in each epoch, label unchanged (``data.details``; 0 = off)
    "details": 0.0,
    # an offline teacher (``soft_targets``: a file written by ``moe_engine.pretrained_teacher label``
    # with its logits for texts, e.g. a pretrained encoder with another tokenizer that cannot run per
    # step): its distribution for a training query is mixed into the online teachers' with weight
    # ``soft_targets_share`` (alone when there are none); texts in the file that are not training
    # queries are transfer examples with no label, ``transfer_per_epoch`` of them drawn each epoch,
    # trained on the teacher's distribution only (Hinton et al. 2015's transfer set)
    "soft_targets": None, "soft_targets_share": 1.0, "transfer_per_epoch": 0,
    # word dropout for the examples that carry that teacher's logits (None: ``word_dropout``). The
    # logits are the teacher's reading of the whole text; dropping words changes what the student
    # reads but not its target, where lower-casing (the encoder is uncased) and sub-word splits
    # leave the meaning as the teacher read it (Beyer et al. 2022: consistent teaching)
    "soft_word_dropout": None,
    # a file written by ``moe_engine.pretrained_teacher embeddings``: the token embeddings start from a
    # pretrained encoder's geometry (its rows scaled to the model's initializer_range) instead of noise
    "init_embeddings": None,
}


# -- load balance ---------------------------------------------------------------------------------------
def aux_loss(router_logits: Sequence[Tensor], top_k: int, valid: Tensor | None) -> Tensor:
    """Switch/Mixtral load-balancing loss, averaged over MoE layers: E * sum_e f_e * P_e.

    f_e: fraction of routed (token, slot) assignments going to expert e; P_e: mean router probability
    of e. Minimal (1.0) when both are uniform. Padding tokens are left out.
    """
    return aux_loss_per_layer(router_logits, top_k, valid).mean()


def aux_loss_per_layer(router_logits: Sequence[Tensor], top_k: int, valid: Tensor | None) -> Tensor:
    """[layers] the load-balancing loss of each MoE layer (see ``aux_loss``)."""
    losses = []
    for logits in router_logits:
        if valid is not None:
            logits = logits[valid]
        probs = torch.softmax(logits.float(), dim=-1)
        E = probs.shape[-1]
        ids = probs.topk(top_k, dim=-1).indices
        f = torch.zeros(E, device=probs.device).index_add_(0, ids.reshape(-1), torch.ones(ids.numel(), device=probs.device))
        f = f / ids.numel()
        losses.append(E * (f * probs.mean(0)).sum())
    return torch.stack(losses)


def expert_counts(router_logits: Sequence[Tensor], top_k: int, valid: Tensor | None) -> Tensor:
    """[layers, E] routed-assignment counts (as inference routes: top-k of the logits)."""
    rows = []
    for logits in router_logits:
        if valid is not None:
            logits = logits[valid]
        ids = logits.detach().topk(top_k, dim=-1).indices.reshape(-1)
        rows.append(torch.bincount(ids, minlength=logits.shape[-1]).float().cpu())
    return torch.stack(rows)


def balancedness(counts: Tensor) -> list[float]:
    """Per layer: mean expert load / max expert load (1.0 = perfectly even, 1/E = one expert takes all)."""
    return [float(c.mean() / c.max().clamp(min=1)) for c in counts]


def update_balance_coefs(coefs: list[float], layer_balance: Sequence[float], tcfg: dict[str, Any]) -> list[float]:
    """One step of the balance controller: raise the aux weight of layers under the target, lower the rest."""
    low, high = tcfg["aux_loss_coef"], tcfg["aux_loss_coef"] * tcfg["balance_max_factor"]
    step = math.exp(tcfg["balance_gain"])
    return [min(high, max(low, c * (step if b < tcfg["balance_target"] else 1 / step)))
            for c, b in zip(coefs, layer_balance, strict=True)]


# -- data -----------------------------------------------------------------------------------------------
@dataclass
class Example:
    ids: list[int]
    label: int = -1  # classification target
    loss_from: int = 0  # LM: first position whose next-token prediction is trained
    text: str = ""
    teacher_ids: list[int] | None = None  # what distillation teachers read instead of ``ids``
    soft: Tensor | None = None  # an offline teacher's logits for the plain text (``soft_targets``)


@dataclass
class Dataset:
    train: list[Example]
    val: list[Example]
    meta: dict[str, Any] = field(default_factory=dict)
    transfer: list[Example] = field(default_factory=list)  # unlabelled, with an offline teacher's logits


def _word_dropout(text: str, p: float, rng: random.Random) -> str:
    if p <= 0:
        return text
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or words)


def _subword_split_ids(tok: Tokenizer, text: str, p: float, rng: random.Random) -> list[int]:
    """Encode ``text`` with each word cut in two at a random place with probability ``p``.

    The byte-level BPE pre-tokenises at spaces, so encoding space-led chunks one by one gives the
    usual ids; cutting a chunk makes the BPE spell it with other, shorter pieces, like BPE dropout
    (Provilkov et al. 2020) but drawn from our seeded ``rng`` so runs stay reproducible.
    """
    if p <= 0:
        return tok.encode(text)
    ids: list[int] = []
    for i, word in enumerate(text.split(" ")):
        chunk = word if i == 0 else " " + word
        first = 2 if i > 0 else 1  # never leave the leading space alone in the first piece
        if len(chunk) > first + 1 and rng.random() < p:
            cut = rng.randrange(first, len(chunk))
            ids += tok.encode(chunk[:cut], add_special_tokens=False) + tok.encode(chunk[cut:], add_special_tokens=False)
        elif chunk:
            ids += tok.encode(chunk, add_special_tokens=False)
    return ids


def augment_example(e: Example, tok: Tokenizer, tcfg: dict[str, Any], rng: random.Random,
                    details: bool = True) -> Example:
    """A fresh random variant of a classification example (one per epoch).

    With ``tcfg["details"]`` a share of the examples (those with ``details``) also get ticket details
    written in (``data.details.add_details``); the teachers then read the text without them, so
    the student learns to give the detailed ticket the teachers' reading of the plain query.
    """
    p = tcfg["word_dropout"] if e.soft is None or tcfg["soft_word_dropout"] is None else tcfg["soft_word_dropout"]
    text = _word_dropout(e.text, p, rng)
    if tcfg["lowercase"] > 0 and rng.random() < tcfg["lowercase"]:
        text = text.lower()
    if details and tcfg["details"] > 0 and rng.random() < tcfg["details"]:
        plain, text = text, add_details(text, rng)
        return Example(_subword_split_ids(tok, text, tcfg["subword_split"], rng), e.label, text=e.text,
                       teacher_ids=tok.encode(plain), soft=e.soft)
    return Example(_subword_split_ids(tok, text, tcfg["subword_split"], rng), e.label, text=e.text, soft=e.soft)


def classify_data(tok: Tokenizer, data_cfg: dict[str, Any]) -> Dataset:
    from .data.banking77 import OOD_LABEL, load_splits, ood_texts, queues

    intent_queue = queues()
    train_rows, val_rows = load_splits()
    ood_train = ood_texts("train", n_augmented=data_cfg.get("ood_augmented", 700), extra=data_cfg.get("ood_extra", False))
    ood_val = ood_texts("validation")
    labels = sorted(intent_queue) + [OOD_LABEL]
    lid = {name: i for i, name in enumerate(labels)}

    def ex(text: str, label: str) -> Example:
        return Example(tok.encode(text), lid[label], text=text)

    train = [ex(t, y) for t, y in train_rows] + [ex(t, OOD_LABEL) for t in ood_train]
    val = [ex(t, y) for t, y in val_rows] + [ex(t, OOD_LABEL) for t in ood_val]
    meta = {"labels": labels, "intent_queue": intent_queue, "ood_label": OOD_LABEL,
            "n_train_b77": len(train_rows), "n_train_ood": len(ood_train),
            "n_val_b77": len(val_rows), "n_val_ood": len(ood_val)}
    return Dataset(train, val, meta)


def lm_data(tok: Tokenizer, data_cfg: dict[str, Any], max_len: int) -> Dataset:
    def read(path: str) -> list[Example]:
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                ex = json.loads(line)
                p, c = tok.encode(ex["prompt"]), tok.encode(ex["completion"])
                ids = p + c
                if len(ids) > max_len:  # never truncate a target: drop the rare over-long example
                    continue
                out.append(Example(ids, loss_from=len(p) - 1, text=ex.get("task", "")))
        return out

    train, val = read(data_cfg["train"]), read(data_cfg["validation"])
    return Dataset(train, val, {"train_file": data_cfg["train"], "validation_file": data_cfg["validation"]})


def batches(examples: list[Example], batch_size: int, rng: random.Random, shuffle: bool = True) -> Iterator[list[Example]]:
    """Length-bucketed batches (little padding), in shuffled order."""
    idx = list(range(len(examples)))
    if shuffle:
        rng.shuffle(idx)
    chunk = batch_size * 50
    out = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s : s + chunk], key=lambda i: len(examples[i].ids))
        out += [[examples[i] for i in part[j : j + batch_size]] for j in range(0, len(part), batch_size)]
    if shuffle:
        rng.shuffle(out)
    yield from out


def collate(batch: list[Example], pad_id: int, max_len: int, device: torch.device, lm: bool) -> dict[str, Tensor]:
    T = min(max(len(e.ids) for e in batch), max_len)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), T), dtype=torch.long)
    targets = torch.full((len(batch), T), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        n = min(len(e.ids), T)
        ids[i, :n] = torch.tensor(e.ids[:n])
        attn[i, :n] = 1
        if lm:
            # position j predicts token j+1; train only on the completion
            for j in range(e.loss_from, n - 1):
                targets[i, j] = e.ids[j + 1]
    out = {"ids": ids, "attn": attn, "targets": targets, "labels": torch.tensor([e.label for e in batch])}
    if any(e.soft is not None for e in batch):
        width = next(e.soft for e in batch if e.soft is not None).shape[-1]
        out["soft"] = torch.stack([e.soft if e.soft is not None else torch.zeros(width) for e in batch])
        out["has_soft"] = torch.tensor([e.soft is not None for e in batch])
    if any(e.teacher_ids is not None for e in batch):
        teacher = [Example(e.teacher_ids if e.teacher_ids is not None else e.ids) for e in batch]
        t = collate(teacher, pad_id, max_len, device, lm=False)
        out["teacher_ids"], out["teacher_attn"] = t["ids"], t["attn"]
    return {k: v.to(device) for k, v in out.items()}


# -- training -------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, total: int, cfg: dict[str, Any], time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr.

    ``time_progress`` (the share of the time budget used) lets a time-budgeted run finish its decay
    when the budget ends rather than stop half-way at a high learning rate.
    """
    warm = cfg["warmup_steps"]
    if step < warm:
        return cfg["lr"] * (step + 1) / warm
    progress = min(1.0, max((step - warm) / max(1, total - warm), time_progress))
    floor = cfg["min_lr_ratio"]
    return cfg["lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def add_dropout_hooks(model: Transformer, p: float) -> list[Any]:
    """Dropout on the embeddings, on each attention and MLP/MoE output (before the residual add) and on
    the pooled features, active only in ``model.train()`` mode; returns the hook handles to remove.

    Done with hooks so the inference model (``moe_engine.model``) stays dropout-free.
    """
    def after(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):  # MoE returns (out, router logits, expert ids)
            return (F.dropout(output[0], p, module.training), *output[1:])
        return F.dropout(output, p, module.training)

    handles = [model.embed_tokens.register_forward_hook(after)]
    for layer in model.layers:
        handles += [layer.self_attn.register_forward_hook(after), layer.mlp.register_forward_hook(after)]
    if model.score is not None:
        handles.append(model.score.register_forward_pre_hook(lambda m, a: (F.dropout(a[0], p, m.training), *a[1:])))
    return handles


def queue_index(meta: dict[str, Any]) -> Tensor | None:
    """[num_labels] queue id of every label (out-of-domain is its own queue), or None without queues."""
    if "intent_queue" not in meta:
        return None
    names = sorted(set(meta["intent_queue"].values()))
    return torch.tensor([names.index(meta["intent_queue"][n]) if n in meta["intent_queue"] else len(names)
                         for n in meta["labels"]])


def queue_nll(logits: Tensor, labels: Tensor, label_queue: Tensor) -> Tensor:
    """NLL of the gold queue, whose probability is the sum of its intents' probabilities."""
    logp = torch.log_softmax(logits.float(), -1)
    lq = label_queue.to(logits.device)
    q_logp = torch.stack([torch.logsumexp(logp[:, lq == q], -1) for q in range(int(lq.max()) + 1)], -1)
    return F.nll_loss(q_logp, lq[labels])


def teacher_probs(teachers: Sequence[Transformer], ids: Tensor, attn: Tensor, temperature: float) -> Tensor:
    """Mean of the teachers' softened class distributions for this batch (no gradient)."""
    with torch.no_grad():
        return torch.stack([torch.softmax(t.classify_logits(ids, attn).float() / temperature, -1)
                            for t in teachers]).mean(0)


def distill_loss(logits: Tensor, target_probs: Tensor, temperature: float) -> Tensor:
    """Hinton et al. (2015): T² · KL(teacher ‖ student) at temperature T, per example."""
    logp = torch.log_softmax(logits.float() / temperature, -1)
    return temperature**2 * F.kl_div(logp, target_probs, reduction="batchmean")


def batch_targets(b: dict[str, Tensor], teachers: Sequence[Transformer], tcfg: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    """(teacher distribution [B, C] at the distillation temperature, which rows have one [B]), or None.

    Online teachers cover every row; the offline teacher's (``soft_targets``) only the rows it
    labelled, and where both exist they are mixed with weight ``soft_targets_share`` on the offline one.
    """
    temp = tcfg["distill_temperature"]
    rows = b["labels"].shape[0]
    online = (teacher_probs(teachers, b.get("teacher_ids", b["ids"]), b.get("teacher_attn", b["attn"]), temp)
              if teachers else None)
    if "soft" not in b:
        return (online, torch.ones(rows, dtype=torch.bool, device=online.device)) if online is not None else None
    offline = torch.softmax(b["soft"].float() / temp, -1)
    has = b["has_soft"]
    if online is None:
        return offline, has
    share = tcfg["soft_targets_share"] * has.float().unsqueeze(-1)
    return (1 - share) * online + share * offline, torch.ones(rows, dtype=torch.bool, device=online.device)


def step_loss(model: Transformer, b: dict[str, Tensor], task: str, tcfg: dict[str, Any],
              label_queue: Tensor | None = None, teachers: Sequence[Transformer] = (),
              layer_aux_coefs: Sequence[float] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(total loss, task loss, routed counts) for one batch.

    ``layer_aux_coefs`` (one per MoE layer, from the balance controller) replaces the single
    ``aux_loss_coef``.
    """
    valid = b["attn"].reshape(-1).bool()
    if task == "classify":
        logits, rl = model.classify_logits(b["ids"], b["attn"], return_router_logits=True)
        labelled = b["labels"] >= 0  # transfer examples (label -1) learn from the teachers alone
        task_loss = (F.cross_entropy(logits[labelled].float(), b["labels"][labelled], label_smoothing=tcfg["label_smoothing"])
                     if labelled.any() else logits.sum() * 0)
        # the online teachers see the same augmented batch as the student ("consistent" distillation),
        # except for ticket details written in (``augment_example``): they read the plain text
        targets = batch_targets(b, teachers, tcfg)
        if targets is not None:
            w, temp = tcfg["distill_weight"], tcfg["distill_temperature"]
            probs, has = targets
            if has.any():
                kd = distill_loss(logits[has], probs[has], temp)
                task_loss = (1 - w) * task_loss + w * kd if labelled.any() else w * kd
        if label_queue is not None and tcfg["queue_loss_coef"] > 0 and labelled.any():
            task_loss = task_loss + tcfg["queue_loss_coef"] * queue_nll(logits[labelled], b["labels"][labelled], label_queue)
    else:
        logits, rl = model.forward(b["ids"], b["attn"], return_router_logits=True)
        task_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), b["targets"].reshape(-1))
    counts = expert_counts(rl, model.args.top_k, valid) if rl else torch.zeros(0, 0)
    if not rl:
        return task_loss, task_loss, counts
    if layer_aux_coefs is not None:
        per_layer = aux_loss_per_layer(rl, model.args.top_k, valid)
        return task_loss + (per_layer * torch.tensor(layer_aux_coefs, device=per_layer.device)).mean(), task_loss, counts
    return task_loss + tcfg["aux_loss_coef"] * aux_loss(rl, model.args.top_k, valid), task_loss, counts


def train(
    model: Transformer, data: Dataset, task: str, tcfg: dict[str, Any], *, seed: int, pad_id: int,
    tok: Tokenizer | None = None, progress: bool = True, max_steps: int | None = None,
    teachers: Sequence[Transformer] = (),
) -> dict[str, Any]:
    from tqdm import tqdm

    tcfg = {**DEFAULT_TRAIN, **tcfg}  # a partial config gets the defaults (every regulariser off)
    dev = model.device
    rng = random.Random(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "norm" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tcfg["lr"], betas=(0.9, 0.98), eps=1e-8,
    )
    n_transfer = min(tcfg["transfer_per_epoch"], len(data.transfer)) if task == "classify" else 0
    steps_per_epoch = math.ceil((len(data.train) + n_transfer) / tcfg["batch_size"])
    total = steps_per_epoch * tcfg["epochs"] if max_steps is None else max_steps
    deadline = time.monotonic() + 60 * tcfg["max_minutes"] if tcfg.get("max_minutes") else None
    amp = dev.type == "cuda"
    history: list[dict[str, float]] = []
    step, t0, stopped_early = 0, time.time(), False
    counts_window = None
    n_moe = sum(1 for layer in model.layers if layer.is_moe) if tcfg["balance_target"] > 0 else 0
    layer_aux_coefs = [tcfg["aux_loss_coef"]] * n_moe if n_moe else None
    label_queue = queue_index(data.meta) if task == "classify" else None
    ood_id = data.meta["labels"].index(data.meta["ood_label"]) if task == "classify" and "ood_label" in data.meta else -1
    hooks = add_dropout_hooks(model, tcfg["dropout"]) if tcfg["dropout"] > 0 else []
    ema_decay = tcfg["ema_decay"]
    ema = {n: p.detach().clone() for n, p in model.named_parameters()} if ema_decay > 0 else None
    model.train()
    bar = tqdm(total=total, disable=not progress, dynamic_ncols=True, desc=f"train {task}")
    for epoch in range(tcfg["epochs"]):
        train_set = data.train
        augment = any(tcfg[k] > 0 for k in ("word_dropout", "subword_split", "lowercase", "details"))
        if n_transfer > 0:
            train_set = train_set + rng.sample(data.transfer, n_transfer)
        if task == "classify" and augment and tok is not None:
            # a fresh random variant of every example each epoch: cheap augmentation for a small labelled set
            train_set = [augment_example(e, tok, tcfg, rng, details=e.label not in (ood_id, -1)) for e in train_set]
        run_loss = 0.0
        for n, batch in enumerate(batches(train_set, tcfg["batch_size"], rng), start=1):
            time_progress = 0.0
            if deadline is not None and tcfg.get("schedule_by_time"):
                time_progress = 1 - (deadline - time.monotonic()) / (60 * tcfg["max_minutes"])
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, tcfg, time_progress)
            b = collate(batch, pad_id, tcfg["max_len"], dev, task == "lm")
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss, task_loss, counts = step_loss(model, b, task, tcfg, label_queue, teachers, layer_aux_coefs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
            opt.step()
            step += 1
            if ema is not None:
                # warm the average up quickly (decay grows with the step) so early weights fade out
                d = min(ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        ema[name].mul_(d).add_(p.detach(), alpha=1 - d)
            run_loss += float(task_loss.detach())
            counts_window = counts if counts_window is None else 0.9 * counts_window + counts
            if layer_aux_coefs is not None:
                layer_aux_coefs = update_balance_coefs(layer_aux_coefs, balancedness(counts_window), tcfg)
            if step % 10 == 0 or step == 1:
                bal = balancedness(counts_window) if counts_window.numel() else []
                bar.set_postfix(epoch=epoch, loss=f"{run_loss / n:.4f}", bal=" ".join(f"{x:.2f}" for x in bal))
                history.append({"step": step, "epoch": epoch, "loss": run_loss / n, "min_balancedness": min(bal or [1.0]),
                                **({"aux_coefs": [round(c, 5) for c in layer_aux_coefs]} if layer_aux_coefs else {})})
            bar.update(1)
            if step >= total or (deadline is not None and time.monotonic() > deadline):
                stopped_early = step < total
                break
        if step >= total or stopped_early:
            break
    bar.close()
    for h in hooks:
        h.remove()
    if ema is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(ema[name])
    model.eval()
    return {"steps": step, "planned_steps": total, "epochs_run": round(step / steps_per_epoch, 2),
            "stopped_early_by_time": stopped_early, "train_seconds": round(time.time() - t0, 1),
            "history": history, "final_train_loss": history[-1]["loss"] if history else None,
            **({"final_aux_coefs": layer_aux_coefs} if layer_aux_coefs else {})}


# -- evaluation -----------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: Transformer, examples: list[Example], task: str, pad_id: int, max_len: int,
            batch_size: int = 256) -> tuple[Tensor, Tensor, float]:
    """(classification logits [N, L] or per-example LM losses [N], routed counts [layers, E], mean loss)."""
    outs, counts, total, n_tok = [], None, 0.0, 0
    for s in range(0, len(examples), batch_size):
        batch = examples[s : s + batch_size]
        b = collate(batch, pad_id, max_len, model.device, task == "lm")
        valid = b["attn"].reshape(-1).bool()
        if task == "classify":
            logits, rl = model.classify_logits(b["ids"], b["attn"], return_router_logits=True)
            outs.append(logits.float().cpu())
        else:
            logits, rl = model.forward(b["ids"], b["attn"], return_router_logits=True)
            lt = F.cross_entropy(logits.float().transpose(1, 2), b["targets"], reduction="none")
            m = (b["targets"] != -100).float()
            outs.append((lt.sum(1) / m.sum(1).clamp(min=1)).cpu())
            total += float(lt.sum())
            n_tok += int(m.sum())
        c = expert_counts(rl, model.args.top_k, valid)
        counts = c if counts is None else counts + c
    return torch.cat(outs), counts, (total / max(n_tok, 1))


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising validation NLL of softmax(logits / T)."""
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def router_metrics(logits: Tensor, labels: Tensor, meta: dict[str, Any], temperature: float,
                   threshold: float | None = None) -> dict[str, Any]:
    """Intent/queue accuracy, the queue confusion (with 'human'), OOD catch rate; picks t if None."""
    from .data.router import HUMAN, decide

    names = meta["labels"]
    id2label = dict(enumerate(names))
    ood = meta["ood_label"]
    iq = meta["intent_queue"]
    gold_label = [names[int(y)] for y in labels]
    gold_queue = [HUMAN if g == ood else iq[g] for g in gold_label]
    md = {"temperature": temperature, "ood_label": ood, "intent_queue": iq}

    def routed(t: float) -> list[str]:
        return [d.queue for d in decide(logits, {**md, "human_threshold": t}, id2label)]

    if threshold is None:
        # maximise 4-way queue accuracy (in-domain to its queue, out-of-domain to human);
        # a tie keeps the higher threshold, which sends doubtful tickets to a person
        best = (-1.0, 0.0)
        for t in [i / 100 for i in range(0, 100)]:
            acc = sum(p == g for p, g in zip(routed(t), gold_queue, strict=True)) / len(gold_queue)
            if acc >= best[0]:
                best = (acc, t)
        threshold = best[1]
    pred = routed(threshold)
    decisions = decide(logits, {**md, "human_threshold": threshold}, id2label)
    in_dom = [i for i, g in enumerate(gold_label) if g != ood]
    oods = [i for i, g in enumerate(gold_label) if g == ood]
    argmax = logits.argmax(-1)
    queues = sorted(set(iq.values())) + [HUMAN]
    confusion = {g: dict.fromkeys(queues, 0) for g in queues}
    for p, g in zip(pred, gold_queue, strict=True):
        confusion[g][p] += 1
    intent_ok = [names[int(argmax[i])] == gold_label[i] for i in in_dom]
    # the intent a ticket gets even when it is routed (the best intent of the chosen queue)
    intent_routed_ok = [decisions[i].intent == gold_label[i] for i in in_dom]
    queue_ok_raw = [iq.get(names[int(argmax[i])], HUMAN) == gold_queue[i] for i in in_dom]
    auto = [i for i in in_dom if pred[i] != HUMAN]
    return {
        "human_threshold": threshold,
        "temperature": temperature,
        "intent_accuracy": sum(intent_ok) / len(in_dom),
        "intent_accuracy_decision_rule": sum(intent_routed_ok) / len(in_dom),
        "queue_accuracy_argmax": sum(queue_ok_raw) / len(in_dom),
        "queue_accuracy_in_domain": sum(pred[i] == gold_queue[i] for i in in_dom) / len(in_dom),
        "queue_accuracy_auto_routed": sum(pred[i] == gold_queue[i] for i in auto) / max(len(auto), 1),
        "in_domain_sent_to_human": sum(pred[i] == HUMAN for i in in_dom) / len(in_dom),
        "queue_accuracy_4way_all": sum(p == g for p, g in zip(pred, gold_queue, strict=True)) / len(pred),
        "ood_catch_rate": sum(pred[i] == HUMAN for i in oods) / max(len(oods), 1),
        "n_in_domain": len(in_dom),
        "n_ood": len(oods),
        "queue_confusion": confusion,
        "nll_calibrated": float(F.cross_entropy(logits / temperature, labels)),
        "ece_calibrated": ece(torch.softmax(logits / temperature, -1), labels),
    }


def ece(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    conf, pred = probs.max(-1)
    ok = (pred == labels).float()
    total = 0.0
    for i in range(bins):
        m = (conf > i / bins) & (conf <= (i + 1) / bins)
        if m.any():
            total += float(m.float().mean() * (conf[m].mean() - ok[m].mean()).abs())
    return total


def measure_throughput(model: Transformer, texts: list[str], batch_size: int = 512, repeats: int = 3) -> dict[str, float]:
    """Queries/s of the engine's batched ``classify`` on raw text (tokenisation included).

    Texts are grouped by length first, as a batch classifier should do: a batch is padded to its
    longest query, so one long query in a batch of short ones would cost the whole batch.
    """
    texts = sorted(texts, key=len)
    model.classify(texts[:batch_size])  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, len(texts), batch_size):
            model.classify(texts[s : s + batch_size])
        best = max(best, len(texts) / (time.perf_counter() - t0))
    return {"queries_per_s": round(best, 1), "batch_size": batch_size, "threads": torch.get_num_threads(),
            "n_queries": len(texts)}


def heatmap(counts: Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = counts / counts.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * counts.shape[1], 1.0 + 0.5 * counts.shape[0]))
    im = ax.imshow(share.numpy(), cmap="viridis", aspect="auto", vmin=0)
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    ax.set_xticks(range(counts.shape[1]))
    ax.set_yticks(range(counts.shape[0]))
    bal = balancedness(counts)
    ax.set_yticklabels([f"{i} (bal {b:.2f})" for i, b in enumerate(bal)])
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="share of routed tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- checkpoint + card ------------------------------------------------------------------------------------
def model_card(out: Path, task: str, cfg: dict[str, Any], seed: int, data: Dataset, run: dict[str, Any],
               metrics: dict[str, Any], params: dict[str, int], command: str) -> None:
    m = cfg["model"]
    lines = [
        f"# MoEDesk default {'router' if task == 'classify' else 'agent'} model",
        "",
        f"Architecture `{m['architectures'][0]}`: {m['num_hidden_layers']} layers, hidden {m['hidden_size']}, "
        f"{m['num_attention_heads']} heads, {m['num_experts']} experts top-{m['num_experts_per_tok']} "
        f"(expert FFN {m['moe_intermediate_size']}), vocab {m['vocab_size']}. "
        f"Parameters: {params['total']:,} total, {params['active']:,} active per token.",
        "Trained from scratch by `moe_engine.train` on data shipped in this repository; loads with "
        "`moe_engine.load_model`.",
        "",
        "## Reproduce",
        "```",
        command,
        "```",
        "",
        "## Data",
        "```json",
        json.dumps({k: v for k, v in data.meta.items() if k not in ("labels", "intent_queue")}, indent=1),
        "```",
        f"Training examples: {len(data.train)}; validation examples: {len(data.val)}.",
        "",
        "## Hyper-parameters",
        "```json",
        json.dumps({"seed": seed, **cfg["train"]}, indent=1),
        "```",
        "",
        "## Training",
        f"{run['steps']} steps ({run['epochs_run']} epochs) in {run['train_seconds']} s on "
        f"{metrics.get('device', 'cpu')}; final train loss {run['final_train_loss']:.4f}"
        + (" (stopped by the time budget)" if run["stopped_early_by_time"] else "") + ".",
        "",
        "## Metrics (validation)",
        "```json",
        json.dumps({k: v for k, v in metrics.items() if k != "balancedness"}, indent=1),
        "```",
        "",
        "## Expert balance (validation tokens)",
        "Per MoE layer, balancedness = mean expert load / max expert load (1.0 is perfectly even):",
        "",
        "| layer | balancedness |",
        "| --- | --- |",
        *[f"| {i} | {b:.3f} |" for i, b in enumerate(metrics["balancedness"])],
        "",
        "![routing heatmap](routing_heatmap.png)",
        "",
    ]
    (out / "model_card.md").write_text("\n".join(lines))


def count_params(model: Transformer) -> dict[str, int]:
    a = model.args
    total = sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = total - expert + expert * a.top_k // max(a.num_experts, 1)
    return {"total": total, "active": active}


def warm_start(model: Transformer, source: Transformer) -> dict[str, Any]:
    """Copy ``source``'s weights into ``model``: every tensor when the shapes agree (a second stage of the
    same model), or, from a causal LM into a classifier, the embeddings and the first layers (the
    language-model head is dropped; the classifier head and any extra layers keep their fresh init).

    Returns which tensors were copied and which were left as initialised. A tensor present in both
    with another shape is an error: it means the two models are not the same architecture.
    """
    ours, theirs = model.state_dict(), source.state_dict()
    copied, kept = [], []
    for name, t in ours.items():
        if name not in theirs:
            kept.append(name)
            continue
        if theirs[name].shape != t.shape:
            raise ValueError(f"init_from: {name} has shape {tuple(theirs[name].shape)} there, {tuple(t.shape)} here")
        copied.append(name)
    if not copied:
        raise ValueError("init_from: no tensor in common with the model being trained")
    with torch.no_grad():
        for name in copied:
            ours[name].copy_(theirs[name])
    head = {"lm_head.weight", "score.weight", "score.bias"}
    dropped = sorted(n for n in theirs if n not in ours and n not in head)
    layers = {n.split(".")[1] for n in dropped if n.startswith("layers.")}
    return {"copied_tensors": len(copied), "fresh_tensors": sorted(kept), "source_layers_unused": len(layers)}


def init_token_embeddings(model: Transformer, path: str | Path, std: float) -> dict[str, Any]:
    """Overwrite the token embeddings of the tokens ``path`` maps with its rows, scaled so that their
    root mean square is ``std`` (the random init's); the other tokens keep their init."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    table, mapped = saved["embeddings"].float(), saved["mapped"].bool()
    weight = model.embed_tokens.weight
    if table.shape != weight.shape or mapped.shape != (weight.shape[0],):
        raise ValueError(f"init_embeddings: {path} holds a {tuple(table.shape)} table, the model's embeddings are "
                         f"{tuple(weight.shape)} (another tokenizer or hidden size)")
    rows = table[mapped]
    with torch.no_grad():
        weight[mapped.to(weight.device)] = (rows * (std / rows.pow(2).mean().sqrt())).to(weight)
    return {"file": str(path), "encoder": saved.get("encoder", ""), "mapped_tokens": int(mapped.sum()),
            "explained_variance": round(float(saved.get("explained_variance", float("nan"))), 4)}


def attach_soft_targets(data: Dataset, tok: Tokenizer, path: str | Path) -> dict[str, Any]:
    """Give the training examples an offline teacher's logits (by exact text) and make its other texts
    the transfer set. Refuses a file whose labels are not the student's, or that holds validation texts."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if list(saved["labels"]) != list(data.meta["labels"]):
        raise ValueError(f"soft_targets: {path} was written for another label set than the student's")
    logits = saved["logits"].float()
    by_text = {t: i for i, t in enumerate(saved["texts"])}
    val_texts = {e.text for e in data.val}
    leaked = [t for t in saved["texts"] if t in val_texts]
    if leaked:
        raise ValueError(f"soft_targets: {path} holds {len(leaked)} validation texts (e.g. {leaked[0]!r})")
    train_texts = set()
    for e in data.train:
        if e.text in by_text:
            e.soft = logits[by_text[e.text]]
            train_texts.add(e.text)
    data.transfer = [Example(tok.encode(t), -1, text=t, soft=logits[i]) for t, i in by_text.items() if t not in train_texts]
    return {"file": str(path), "teacher": saved.get("teacher", ""), "labelled_training_examples": sum(e.soft is not None for e in data.train),
            "transfer_texts": len(data.transfer)}


def load_teachers(paths: Sequence[str | Path], student_config: dict[str, Any], device: str) -> list[Transformer]:
    """Teacher classifiers for distillation; they must share the student's vocabulary and labels."""
    from .loader import load_model

    teachers = []
    for path in paths:
        t = load_model(path, device=device).eval()
        if t.score is None:
            raise ValueError(f"distill_from: {path} is not a sequence-classification checkpoint")
        if t.config.vocab_size != student_config["vocab_size"] or t.config.id2label != {
                int(k): v for k, v in student_config["id2label"].items()}:
            raise ValueError(f"distill_from: {path} has another vocabulary or label set than the student")
        for p in t.parameters():
            p.requires_grad_(False)
        teachers.append(t)
    return teachers


def run(task: str, cfg: dict[str, Any], out: Path, seed: int, *, tokenizer_dir: Path, device: str = "cpu",
        progress: bool = True, max_steps: int | None = None, command: str = "", eval_throughput: bool = True,
        ) -> dict[str, Any]:
    tcfg = {**DEFAULT_TRAIN, **cfg.get("train", {})}
    cfg = {**cfg, "train": tcfg}
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    seed_everything(seed)
    tok = Tokenizer.from_dir(tokenizer_dir)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    data = classify_data(tok, cfg.get("data", {})) if task == "classify" else lm_data(tok, cfg["data"], tcfg["max_len"])
    hf = dict(cfg["model"])
    hf.update(vocab_size=tok.vocab_size, pad_token_id=pad_id)
    if tok.eos_token_id is not None:
        hf["eos_token_id"] = tok.eos_token_id
    if task == "classify":
        labels = data.meta["labels"]
        hf.update(id2label={str(i): n for i, n in enumerate(labels)}, label2id={n: i for i, n in enumerate(labels)},
                  num_labels=len(labels))
    cfg["model"] = hf
    model = build_model(hf, seed=seed, device=device)
    if tcfg.get("init_embeddings"):
        cfg["embedding_init"] = init_token_embeddings(model, tcfg["init_embeddings"], hf.get("initializer_range", 0.02))
    if tcfg.get("init_from"):
        from .loader import load_model

        transfer = warm_start(model, load_model(tcfg["init_from"], device=device))
        cfg["warm_start"] = {"from": str(tcfg["init_from"]), **transfer}
    teachers = load_teachers(tcfg["distill_from"], hf, device) if task == "classify" else []
    if task == "classify" and tcfg.get("soft_targets"):
        data.meta["soft_targets"] = attach_soft_targets(data, tok, tcfg["soft_targets"])
    run_info = train(model, data, task, tcfg, seed=seed, pad_id=pad_id, tok=tok, progress=progress, max_steps=max_steps,
                     teachers=teachers)

    outs, counts, val_loss = predict(model, data.val, task, pad_id, tcfg["max_len"])
    metrics: dict[str, Any] = {"device": str(torch.device(device)), "balancedness": balancedness(counts)}
    metrics["min_balancedness"] = min(metrics["balancedness"])
    extra: dict[str, Any] = {}
    if task == "classify":
        labels_t = torch.tensor([e.label for e in data.val])
        T = fit_temperature(outs, labels_t)
        metrics.update(router_metrics(outs, labels_t, data.meta, T))
        extra["moedesk"] = {
            "task": "router", "temperature": round(T, 4), "human_threshold": metrics["human_threshold"],
            "ood_label": data.meta["ood_label"], "intent_queue": data.meta["intent_queue"],
            "decision_rule": "moe_engine.data.router.decide",
        }
    else:
        metrics["validation_loss_per_token"] = val_loss
        metrics["validation_perplexity"] = math.exp(min(val_loss, 50))
        extra["moedesk"] = {"task": "agent", "prompt_format": "support_agents.language.prompts"}
    extra["classifier_pooling"] = hf.get("classifier_pooling", "last")

    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out, extra_config=extra)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_dir / name).is_file() and tokenizer_dir.resolve() != out.resolve():
            shutil.copy(tokenizer_dir / name, out / name)
    if task == "classify" and eval_throughput:
        from .loader import load_model

        loaded = load_model(out)
        metrics["throughput"] = measure_throughput(loaded, [e.text for e in data.val] * 4)
    heatmap(counts, out / "routing_heatmap.png", f"{task} model: expert share per layer (validation)")
    params = count_params(model)
    model_card(out, task, cfg, seed, data, run_info, metrics, params, command)
    (out / "metrics.json").write_text(json.dumps({"metrics": metrics, "run": {k: v for k, v in run_info.items() if k != "history"},
                                                  "params": params}, indent=1) + "\n")
    (out / "train_config.json").write_text(json.dumps({"seed": seed, **cfg}, indent=1) + "\n")
    return {"metrics": metrics, "run": run_info, "model": model, "params": params}


def main(argv: list[str] | None = None) -> None:
    import sys

    ap = argparse.ArgumentParser(description="train a default MoEDesk model")
    ap.add_argument("--task", choices=("classify", "lm"), required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", type=Path, default=Path("checkpoints/tokenizer"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    cfg = json.loads(a.config.read_text())
    command = "python -m moe_engine.train " + " ".join(sys.argv[1:] if argv is None else argv)
    res = run(a.task, cfg, a.out, a.seed, tokenizer_dir=a.tokenizer, device=a.device, progress=not a.no_progress,
              max_steps=a.max_steps, command=command)
    print(json.dumps({k: v for k, v in res["metrics"].items() if k != "queue_confusion"}, indent=1))


if __name__ == "__main__":
    main()
