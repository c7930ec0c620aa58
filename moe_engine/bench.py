"""Throughput measurement shared by the CLI (`python -m moe_engine bench`) and benchmarks/.

Each decode step (and each of ``reps`` prefills) is timed on its own and the median is reported:
the dev machine is shared, and a median is far less sensitive to being descheduled than a mean.
Both wall time and process CPU time are recorded; on a contended machine the CPU-time figures
(``*_cpu``) say what the work costs, the wall-time ones what a user waited.
"""
from __future__ import annotations

import contextlib
import statistics
import time

import torch

from .generate import Scheduler, make_request
from .model import Transformer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _result(batch: int, prompt_len: int, new_tokens: int, prefill: list, steps: list) -> dict:
    """prefill / steps: lists of (wall seconds, cpu seconds)."""
    out = {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens}
    for i, suffix in ((0, ""), (1, "_cpu")):
        p = statistics.median(x[i] for x in prefill)
        s = statistics.median(x[i] for x in steps)
        out |= {f"prefill_tok_s{suffix}": batch * prompt_len / p, f"decode_tok_s{suffix}": batch / s,
                f"decode_step_ms{suffix}": 1000 * s}
    return out


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    w, c = _clock()
    return w - t0[0], c - t0[1]


def bench_engine(
    model: Transformer, *, batch: int, prompt_len: int, new_tokens: int, reps: int = 3, seed: int = 0,
    decode_context: contextlib.AbstractContextManager | None = None,
) -> dict:
    """Prefill tokens/s (batch x prompt_len in one pass) and decode tokens/s (batch rows per step).

    ``decode_context`` (a torch.profiler.profile, say) is entered around the timed decode steps only.
    """
    g = torch.Generator().manual_seed(seed)
    V = model.args.vocab_size
    prompts = [torch.randint(0, V, (prompt_len,), generator=g).tolist() for _ in range(batch)]
    sched = Scheduler(model, batch, prompt_len + new_tokens + 1)
    # a compiled decode step compiles on its first calls: keep that out of the timings
    sched.admit([make_request(model, p, max_new_tokens=4, eos=False) for p in prompts])
    while sched.rows:
        sched.step()
    prefill, steps = [], []
    for _ in range(reps + 1):  # the first prefill warms up (allocator, lazy init) and is dropped
        sched.rows.clear()
        reqs = [make_request(model, p, max_new_tokens=new_tokens + 1, eos=False) for p in prompts]
        _sync(model.device)
        t0 = _clock()
        sched.admit(reqs)
        _sync(model.device)
        prefill.append(_since(t0))
    with decode_context or contextlib.nullcontext():
        for _ in range(new_tokens):
            t0 = _clock()
            sched.step()
            _sync(model.device)
            steps.append(_since(t0))
    out = _result(batch, prompt_len, new_tokens, prefill[1:], steps[1:])
    if sched.n_moe:
        # distinct experts each decode step touched, summed over layers (what a step reads from memory)
        r = sched.routing[:batch, :, prompt_len : prompt_len + new_tokens].long().cpu()  # [B, L, S, k]
        per_step = [sum(len(torch.unique(r[:, layer, s])) for layer in range(r.shape[1])) for s in range(r.shape[2])]
        out["unique_experts_per_step"] = statistics.mean(per_step)
    return out


def bench_transformers(
    hf_model: torch.nn.Module, *, batch: int, prompt_len: int, new_tokens: int, reps: int = 3, seed: int = 0,
) -> dict:
    """The same through transformers: prefill = forward over the prompts, decode = generate's steps
    (timed per step with a logits processor, which generate calls once per new token)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    g = torch.Generator().manual_seed(seed)
    dev = next(hf_model.parameters()).device
    ids = torch.randint(0, hf_model.config.vocab_size, (batch, prompt_len), generator=g).to(dev)
    mask = torch.ones_like(ids)
    stamps: list[tuple[float, float]] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            _sync(dev)
            stamps.append(_clock())
            return scores

    prefill = []
    with torch.inference_mode():
        for _ in range(reps + 1):
            _sync(dev)
            t0 = _clock()
            hf_model(ids, attention_mask=mask, logits_to_keep=1)
            _sync(dev)
            prefill.append(_since(t0))
        hf_model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens + 1, min_new_tokens=new_tokens + 1,
                          do_sample=False, eos_token_id=None, pad_token_id=0,
                          logits_processor=LogitsProcessorList([Stamp()]))
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:], strict=False)]
    return _result(batch, prompt_len, new_tokens, prefill[1:], steps[1:])
