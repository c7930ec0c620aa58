"""Classification spread over forked processes with one intra-op thread each.

Why processes and not threads: a classify batch is a string of small matrix products (the router's
are [~1,000 tokens x 192] by [192 x 512]), where two OpenMP threads spend part of each product
synchronising: on the 2-core Zen 3 VM two threads classify ~1.5x what one does, two single-threaded
processes 1.1-1.3x what one process with two threads does (docs/benchmarks.md § models). ``fork``
shares the loaded weights and the token ids copy-on-write, so nothing is reloaded or sent out;
only logits, routing, usage and routing counts come back.

Fork from a single-threaded program only (a batch command such as ``manage.py classify``), never
from inside a threaded server: a thread holding a lock at the fork leaves it held in the child.
"""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from typing import Any

import numpy as np
import torch

from .cost import Prices
from .model import Transformer
from .telemetry import RoutingStats

# what the forked children classify, set before the fork: they inherit it, nothing is pickled
_job: tuple[Transformer, Sequence[Sequence[int]]] | None = None


def can_fork() -> bool:
    return "fork" in mp.get_all_start_methods()


def classify_in_processes(
    model: Transformer, toks: Sequence[Sequence[int]], *, processes: int, batch_size: int,
    prices: Prices | None,
) -> tuple[torch.Tensor, list[torch.Tensor], list[Any]]:
    """(logits [N, labels], routing per prompt, usage per prompt), in the order of ``toks``.

    The prompts are dealt out by length (every ``processes``-th of the length-sorted list), so each
    process gets the same mix of short and long ones. The children's routing counts are added to
    ``model.telemetry``, as if the parent had classified them.
    """
    global _job
    order = sorted(range(len(toks)), key=lambda i: len(toks[i]))
    shards = [s for s in (order[p::processes] for p in range(processes)) if s]
    threads = max(1, torch.get_num_threads() // len(shards))
    _job = (model, toks)
    try:
        # not multiprocessing.Pool: it waits forever for a child that was killed (OOM), where this
        # raises BrokenProcessPool
        with ProcessPoolExecutor(len(shards), mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(_classify_shard, shards, repeat(threads), repeat(batch_size), repeat(prices)))
    finally:
        _job = None
    logits = torch.empty(len(toks), model.args.num_labels)
    routing: list[torch.Tensor | None] = [None] * len(toks)
    usage: list[Any] = [None] * len(toks)
    for shard, (lg, rt, us, counts, tokens) in zip(shards, parts, strict=True):
        logits[torch.tensor(shard)] = torch.from_numpy(lg)
        for j, i in enumerate(shard):
            routing[i], usage[i] = torch.from_numpy(rt[j]), us[j]
        if model.telemetry is not None:
            model.telemetry.add(torch.from_numpy(counts), tokens)
    return logits, routing, usage


def _classify_shard(
    shard: list[int], threads: int, batch_size: int, prices: Prices | None,
) -> tuple[np.ndarray, list[np.ndarray], list[Any], np.ndarray, int]:
    from .generate import classify

    torch.set_num_threads(threads)
    model, toks = _job
    counts, tokens = np.zeros(0, dtype=np.int64), 0
    if model.telemetry is not None:
        # counters of its own: they come back as this shard's counts, and their lock cannot be one
        # that another of the parent's threads held at the fork
        model.telemetry = RoutingStats(model.telemetry.n_layers, model.telemetry.n_experts)
    out = classify(model, [toks[i] for i in shard], batch_size=batch_size, prices=prices)
    if model.telemetry is not None:
        counts, tokens = model.telemetry.counts.numpy(), int(model.telemetry.tokens)
    # numpy arrays pickle as bytes; torch tensors would each go through a shared-memory segment
    return out.logits.numpy(), [r.numpy() for r in out.routing], out.usage, counts, tokens
