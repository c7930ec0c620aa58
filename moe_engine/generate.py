"""Batched generation with a preallocated KV cache, one scheduler for `generate` and the server.

Every batch row has its own positions (cache slot = position), so prompts of any length share a
batch, and a new request can take a free row between two decode steps (continuous batching). A
finished row is refilled by moving the last row into it, so decode always runs on rows [0, n).

A request may carry a ``TokenConstraint`` (structured decoding, as in Outlines or llama.cpp
grammars): before each greedy or sampled pick, its disallowed logits become -inf. Rows without one
pay nothing.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from .cost import Prices, Usage, make_usage, param_counts
from .model import KVCache, Transformer


@dataclass
class GenerateOutput:
    tokens: list[list[int]]  # generated ids per prompt (a stop token id, if hit, is the last one)
    routing: list[Tensor]  # per prompt int [moe_layers, fed_tokens, top_k]; fed = prompt + generated - 1
    usage: list[Usage]
    finish_reasons: list[str]  # "stop" | "length" | "constraint" (its constraint allowed no token)
    texts: list[str] | None = None  # decoded, cut before a stop string (when a tokenizer is present)


@dataclass
class ClassifyOutput:
    logits: Tensor  # fp32 [B, num_labels]
    routing: list[Tensor]  # per prompt int [moe_layers, tokens, top_k]
    usage: list[Usage]
    labels: list[str] = field(default_factory=list)  # argmax label names (config.id2label)


class TokenConstraint(Protocol):
    """Per-request rule for the next token, asked once per decode step."""

    def allowed(self, generated: Sequence[int]) -> Tensor | Sequence[int] | None:
        """Allowed next-token ids, or a bool mask over the vocabulary, given the ids generated so far.

        None: no restriction at this step. Nothing allowed: the request ends with finish reason
        "constraint" (no token is appended).
        """
        ...


@dataclass(eq=False)
class Request:
    ids: list[int]
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    stop_ids: frozenset[int] = frozenset()
    stop_strs: tuple[str, ...] = ()
    on_done: Callable[[Request], None] | None = None
    constraint: TokenConstraint | None = None
    out: list[int] = field(default_factory=list)
    finish: str | None = None
    text: str | None = None
    routing: Tensor | None = None
    usage: Usage | None = None
    t_submit: float = field(default_factory=time.perf_counter)
    device_s: float = 0.0

    @property
    def fed(self) -> int:
        """Tokens that went through the model: the last sampled one never does."""
        return len(self.ids) + max(len(self.out) - 1, 0)


def check_prompt_ids(ids: Sequence[int], vocab_size: int) -> None:
    if not ids:
        raise ValueError("prompt is empty")
    lo, hi = min(ids), max(ids)
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"prompt token ids must lie in [0, {vocab_size}); got min {lo}, max {hi}")


def make_request(
    model: Transformer, ids: Sequence[int], *, max_new_tokens: int = 64, temperature: float = 0.0,
    top_p: float = 1.0, seed: int | None = None, stop: Sequence[int | str] | int | str | None = None,
    eos: bool = True, on_done: Callable[[Request], None] | None = None,
    constraint: TokenConstraint | None = None,
) -> Request:
    """Validate one request. ``stop``: token ids and/or strings; ``eos`` adds the model's EOS ids."""
    ids = [int(t) for t in ids]
    check_prompt_ids(ids, model.args.vocab_size)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1; got {temperature}, {top_p}")
    if stop is None:
        stop = []
    elif isinstance(stop, (int, str)):
        stop = [stop]
    stop_ids = {s for s in stop if isinstance(s, int)}
    stop_strs = tuple(s for s in stop if isinstance(s, str) and s)
    if stop_strs and model.tokenizer is None:
        raise ValueError("stop strings need a tokenizer (the checkpoint has no tokenizer.json)")
    if eos:
        stop_ids |= set(model.args.eos_token_ids)
        tok = model.tokenizer
        if tok is not None and tok.eos_token_id is not None:
            stop_ids.add(tok.eos_token_id)
    gen = None
    if temperature > 0:
        gen = torch.Generator(device=model.device)
        gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    if constraint is not None and not callable(getattr(constraint, "allowed", None)):
        raise ValueError("constraint must have an allowed(generated_ids) method")
    return Request(ids, max_new_tokens, float(temperature), float(top_p), gen, frozenset(stop_ids), stop_strs,
                   on_done, constraint)


DEAD_END = -1  # sampled "token" of a row whose constraint allows nothing


def apply_constraints(logits: Tensor, reqs: Sequence[Request]) -> list[int]:
    """Set disallowed logits of constrained rows to -inf in place; returns the rows left with no token."""
    dead = []
    for i, r in enumerate(reqs):
        if r.constraint is None or r.max_new_tokens == 0:
            continue
        allowed = r.constraint.allowed(r.out)
        if allowed is None:
            continue
        if isinstance(allowed, Tensor) and allowed.dtype == torch.bool:
            mask = allowed.to(logits.device)
        else:
            mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            mask[torch.as_tensor(allowed, dtype=torch.long, device=logits.device)] = True
        if not mask.any():
            dead.append(i)
        logits[i].masked_fill_(~mask, float("-inf"))
    return dead


def sample(logits: Tensor, reqs: Sequence[Request]) -> Tensor:
    """Greedy rows by argmax (batched); sampled rows with their own seeded generator.

    Constrained rows are masked first; a row whose constraint allows nothing gets ``DEAD_END``.
    """
    dead = apply_constraints(logits, reqs) if any(r.constraint is not None for r in reqs) else []
    out = logits.argmax(-1)
    for i, r in enumerate(reqs):
        if r.temperature > 0 and i not in dead:
            probs = torch.softmax(logits[i].float() / r.temperature, dim=-1)
            if r.top_p < 1.0:
                p, idx = probs.sort(descending=True)
                drop = (p.cumsum(0) - p) >= r.top_p  # keep the smallest prefix reaching top_p
                p = p.masked_fill(drop, 0.0)
                probs = torch.zeros_like(probs).scatter_(0, idx, p)
            out[i] = torch.multinomial(probs, 1, generator=r.generator)[0]
    for i in dead:
        out[i] = DEAD_END
    return out


class Scheduler:
    """Owns a KV cache of ``max_batch`` rows x ``max_len`` slots; not thread-safe (one driver)."""

    def __init__(self, model: Transformer, max_batch: int, max_len: int, prices: Prices | None = None):
        self.model, self.args = model, model.args
        self.max_batch, self.max_len = max_batch, max_len
        self.prices = prices
        dev = model.device
        # one spare slot: a row never fills the cache to its last slot, where the compiled decode
        # step (whose graph assumes a strict prefix of the cache) would recompile
        self.cache = KVCache(self.args, max_batch, max_len + 1, dev, model.dtype)
        self.n_moe = len(self.args.moe_layers)
        self.routing = torch.zeros(max_batch, self.n_moe, max_len, self.args.top_k, dtype=torch.int16, device=dev)
        self.rows: list[Request] = []

    @property
    def free(self) -> int:
        return self.max_batch - len(self.rows)

    def fits(self, r: Request) -> bool:
        return len(r.ids) + max(r.max_new_tokens - 1, 0) <= self.max_len

    @torch.inference_mode()
    def admit(self, reqs: Sequence[Request]) -> list[Request]:
        """Prefill new requests into free rows (one padded batch); returns those already finished."""
        if not reqs:
            return []
        if len(reqs) > self.free:
            raise ValueError(f"{len(reqs)} requests but only {self.free} free rows")
        for r in reqs:
            if not self.fits(r):
                raise ValueError(f"prompt ({len(r.ids)}) + max_new_tokens ({r.max_new_tokens}) > {self.max_len}")
        t0 = time.perf_counter()
        dev, m, n0 = self.model.device, len(reqs), len(self.rows)
        lens = [len(r.ids) for r in reqs]
        T = max(lens)
        ids = torch.zeros(m, T, dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, : lens[i]] = torch.tensor(r.ids)
        ids = ids.to(dev)
        pos = torch.arange(T, device=dev).expand(m, T)
        out = self.model.run(ids, pos, mask=self.model._mask(pos, pos, None),
                             cache=self.cache.rows(slice(n0, n0 + m)), kv_len=T)
        lens_t = torch.tensor(lens, device=dev)
        logits = self.model.head()(out.hidden[torch.arange(m, device=dev), lens_t - 1]).float()
        if self.n_moe:
            r_ids = torch.stack(out.expert_ids).view(self.n_moe, m, T, -1).transpose(0, 1)
            self.routing[n0 : n0 + m, :, :T] = r_ids.to(torch.int16)
            valid = (torch.arange(T, device=dev)[None, :] < lens_t[:, None]).reshape(-1)
            self.model.telemetry.update(out.expert_ids, valid)
        self.rows.extend(reqs)
        toks = sample(logits, reqs).tolist()
        dt = time.perf_counter() - t0
        total = sum(lens)
        for r, n in zip(reqs, lens, strict=True):
            r.device_s += dt * n / total
        return self._advance(toks, range(n0, n0 + m))

    @torch.inference_mode()
    def step(self) -> list[Request]:
        """One decode step for every active row; returns the requests that finished."""
        if not self.rows:
            return []
        t0 = time.perf_counter()
        dev, n = self.model.device, len(self.rows)
        pos_list = [len(r.ids) + len(r.out) - 1 for r in self.rows]
        kv_len = max(pos_list) + 1
        toks = torch.tensor([r.out[-1] for r in self.rows], device=dev)[:, None]
        pos = torch.tensor(pos_list, device=dev)[:, None]
        slots = torch.arange(kv_len, device=dev).expand(n, kv_len)
        logits, expert_ids = self.model.decode(toks, pos, self.model._mask(pos, slots, None),
                                               self.cache.rows(slice(0, n)), kv_len)
        if self.n_moe:
            r_ids = torch.stack(expert_ids).transpose(0, 1)  # [n, L, k]
            self.routing[torch.arange(n, device=dev), :, pos[:, 0]] = r_ids.to(torch.int16)
            self.model.telemetry.update(expert_ids)
        new = sample(logits, self.rows).tolist()
        dt = time.perf_counter() - t0
        for r in self.rows:
            r.device_s += dt / n
        return self._advance(new, range(n))

    def _advance(self, toks: list[int], rows: range) -> list[Request]:
        done = []
        for t, i in zip(toks, rows, strict=True):
            r = self.rows[i]
            if r.max_new_tokens == 0:
                r.finish = "length"
            elif t == DEAD_END:
                r.finish = "constraint"
            else:
                r.out.append(t)
                if t in r.stop_ids or self._hit_stop_str(r):
                    r.finish = "stop"
                elif len(r.out) >= r.max_new_tokens:
                    r.finish = "length"
            if r.finish:
                done.append(i)
        finished = []
        for i in sorted(done, reverse=True):
            finished.append(self._retire(i))
        return finished

    def _hit_stop_str(self, r: Request) -> bool:
        if not r.stop_strs:
            return False
        # only the tail can newly contain a stop string
        tail = self.model.tokenizer.decode(r.out[-(max(map(len, r.stop_strs)) + 8):], skip_special_tokens=False)
        return any(s in tail for s in r.stop_strs)

    def _retire(self, i: int) -> Request:
        r = self.rows[i]
        r.routing = self.routing[i, :, : r.fed].to(torch.int32).cpu()
        tok = self.model.tokenizer
        if tok is not None:
            text = tok.decode(r.out)
            for s in r.stop_strs:
                cut = text.find(s)
                if cut >= 0:
                    text = text[:cut]
            r.text = text
        last = len(self.rows) - 1
        if i != last:
            self.cache.move_row(last, i)
            self.routing[i] = self.routing[last]
            self.rows[i] = self.rows[last]
        self.rows.pop()
        r.usage = make_usage(self.args, len(r.ids), len(r.out), r.fed, time.perf_counter() - r.t_submit,
                             r.device_s, self.model.device.type, self.prices)
        if r.on_done is not None:
            r.on_done(r)
        return r


def _as_token_lists(model: Transformer, prompts: str | Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(prompts, str):
        prompts = [prompts]
    out = []
    for p in prompts:
        if isinstance(p, str):
            if model.tokenizer is None:
                raise ValueError("text prompts need a tokenizer (the checkpoint has no tokenizer.json)")
            p = model.tokenizer.encode(p)
        elif isinstance(p, int):
            raise ValueError("prompts must be a list of token-id lists (or strings), not a flat list of ids")
        out.append(list(p))
    return out


def generate(
    model: Transformer, prompts: str | Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 64, *,
    temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
    stop: Sequence[int | str] | int | str | None = None, eos: bool = True, max_batch: int | None = None,
    prices: Prices | None = None, constraints: Sequence[TokenConstraint | None] | None = None,
) -> GenerateOutput:
    """Generate for every prompt in one batch (rows refill from the queue if ``max_batch`` is smaller).

    With ``seed``, prompt i samples from its own generator seeded ``seed + i``, so its output does not
    depend on what else is in the batch. ``constraints[i]`` (or None) restricts prompt i's tokens.
    """
    toks = _as_token_lists(model, prompts)
    if constraints is None:
        constraints = [None] * len(toks)
    if len(constraints) != len(toks):
        raise ValueError(f"{len(constraints)} constraints for {len(toks)} prompts")
    reqs = [
        make_request(model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                     seed=None if seed is None else seed + i, stop=stop, eos=eos, constraint=c)
        for i, (ids, c) in enumerate(zip(toks, constraints, strict=True))
    ]
    if not reqs:
        return GenerateOutput([], [], [], [], [])
    max_len = max(len(r.ids) + max(r.max_new_tokens - 1, 0) for r in reqs)
    sched = Scheduler(model, min(max_batch or len(reqs), len(reqs)), max_len, prices)
    pending = list(reqs)
    while pending or sched.rows:
        if pending and sched.free:
            take, pending = pending[: sched.free], pending[sched.free :]
            sched.admit(take)
        else:
            sched.step()
    texts = [r.text for r in reqs] if model.tokenizer is not None else None
    return GenerateOutput([r.out for r in reqs], [r.routing for r in reqs], [r.usage for r in reqs],
                          [r.finish for r in reqs], texts)


@torch.inference_mode()
def classify(
    model: Transformer, prompts: str | Sequence[str] | Sequence[Sequence[int]], *, batch_size: int = 64,
    prices: Prices | None = None, processes: int = 1,
) -> ClassifyOutput:
    """Sequence classification, pooled like transformers' *ForSequenceClassification.

    Prompts are sorted by length and run ``batch_size`` at a time, so padding stays small; the
    outputs come back in the caller's order. ``processes`` > 1 (CPU, where fork exists) splits
    them over that many forked processes, the intra-op threads divided among them
    (``moe_engine.parallel``: faster on small models; only from a single-threaded program).
    """
    if model.score is None:
        raise ValueError("classify needs a *ForSequenceClassification checkpoint (no `score` head)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    toks = _as_token_lists(model, prompts)
    for p in toks:
        check_prompt_ids(p, model.args.vocab_size)
    from .parallel import can_fork, classify_in_processes

    # below two batches per process the fork costs more than it saves
    if processes > 1 and model.device.type == "cpu" and can_fork() and len(toks) >= 2 * processes * batch_size:
        out, routing, usage = classify_in_processes(model, toks, processes=processes, batch_size=batch_size,
                                                    prices=prices)
    else:
        out, routing, usage = _classify_sorted(model, toks, batch_size, prices)
    id2label = model.args.id2label
    labels = [id2label.get(int(i), str(int(i))) for i in out.argmax(-1)] if len(out) else []
    return ClassifyOutput(out, routing, usage, labels)


def _classify_sorted(
    model: Transformer, toks: list[list[int]], batch_size: int, prices: Prices | None,
) -> tuple[Tensor, list[Tensor], list[Usage]]:
    order = sorted(range(len(toks)), key=lambda i: len(toks[i]))
    logits: list[Tensor | None] = [None] * len(toks)
    routing: list[Tensor | None] = [None] * len(toks)
    usage: list[Usage | None] = [None] * len(toks)
    for c in range(0, len(order), batch_size):
        idx = order[c : c + batch_size]
        lg, rt, us = _classify_batch(model, [toks[i] for i in idx], prices)
        for j, i in enumerate(idx):
            logits[i], routing[i], usage[i] = lg[j], rt[j], us[j]
    out = torch.stack(logits) if logits else torch.zeros(0, model.args.num_labels)
    return out, routing, usage


def _classify_batch(
    model: Transformer, toks: list[list[int]], prices: Prices | None,
) -> tuple[Tensor, list[Tensor], list[Usage]]:
    t0 = time.perf_counter()
    dev, B = model.device, len(toks)
    lens = [len(p) for p in toks]
    T = max(lens)
    pad = model.args.pad_token_id
    fill = 0 if pad is None else pad
    ids = torch.tensor([p + [fill] * (T - n) for p, n in zip(toks, lens, strict=True)], device=dev)
    lens_t = torch.tensor(lens, device=dev)
    attn = (torch.arange(T, device=dev)[None, :] < lens_t[:, None]).long()
    pos, mask = model.positions(ids, attn)
    out = model.run(ids, pos, mask=mask)
    if model.args.classifier_pooling == "last" and pad is not None:
        pool_mask = attn * (ids != pad).long()  # transformers' rule: rightmost token != pad_token_id
    else:
        pool_mask = attn
    logits = model.score(model.pool(out.hidden, ids, pool_mask)).float().cpu()
    if out.expert_ids:
        r_ids = torch.stack(out.expert_ids).view(len(out.expert_ids), B, T, -1).transpose(0, 1).cpu()
        routing = [r_ids[i, :, : lens[i]].to(torch.int32) for i in range(B)]
        model.telemetry.update(out.expert_ids, attn.reshape(-1).bool())
    else:
        routing = [torch.zeros(0, n, model.args.top_k, dtype=torch.int32) for n in lens]
    dt = time.perf_counter() - t0
    counts, total = param_counts(model.args), sum(lens)
    usage = [make_usage(model.args, n, 0, n, dt, dt * n / total, dev.type, prices, counts) for n in lens]
    return logits, routing, usage
