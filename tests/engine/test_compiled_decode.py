"""The compiled CPU decode step (``load_model(..., compile=True)``) against the eager one.

Each test compiles for real (inductor + the system C++ compiler), so they are few and tiny.
"""
from __future__ import annotations

import logging

import pytest
import torch

from moe_engine import load_model
from moe_engine.generate import Scheduler, make_request
from tests.engine.tiny import ARCHS


def _decode_once(model, prompts):
    """Prefill ``prompts`` and run one decode step; returns (logits [n, V], expert ids per layer)."""
    sched = Scheduler(model, len(prompts), 64)  # as generate() does: the cache is made outside
    sched.admit([make_request(model, p, max_new_tokens=8, eos=False) for p in prompts])
    n = len(sched.rows)
    pos_list = [len(r.ids) + len(r.out) - 1 for r in sched.rows]
    kv_len = max(pos_list) + 1
    with torch.inference_mode():  # as Scheduler.step: tensors made outside it would be another graph
        toks = torch.tensor([r.out[-1] for r in sched.rows])[:, None]
        pos = torch.tensor(pos_list)[:, None]
        mask = model._mask(pos, torch.arange(kv_len).expand(n, kv_len), None)
        return model.decode(toks, pos, mask, sched.cache.rows(slice(0, n)), kv_len)


# all four: Qwen2-MoE brings the shared expert with its sigmoid gate and a dense layer, Qwen3-MoE
# per-head q/k norms, OLMoE q/k norms over the projection and clipping. Batch 1 and a larger batch
# are separate graphs, each a cold compile of ~10-40 s; the batch-1 graph differs by shape, not by
# architecture, so it is compiled for the architecture with the most parts only.
# The longest prompt sets the first cache length; it must not equal a model dimension (head_dim 8),
# or dynamo's duck sizing ties the two together and the first graph is specialised to it.
PROMPTS = [[5, 17, 33, 2, 90, 41, 7, 11, 12, 13], [8, 3], [60, 61, 62, 63]]
BATCHES = {arch: ((PROMPTS[:1], PROMPTS) if arch == "qwen2_moe" else (PROMPTS,)) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_decode_matches_eager(tiny, arch, caplog):
    _, d, _ = tiny[arch]
    eager, compiled = load_model(d), load_model(d, compile=True)
    with caplog.at_level(logging.WARNING, logger="moe_engine.model"):
        for batch in BATCHES[arch]:
            ref_logits, ref_ids = _decode_once(eager, batch)
            logits, ids = _decode_once(compiled, batch)
            assert ref_logits.abs().max() > 0.1
            assert (logits - ref_logits).abs().max() <= 1e-4
            assert all(torch.equal(a, b.to(a.dtype)) for a, b in zip(ref_ids, ids, strict=True))
            ref = eager.generate(batch, max_new_tokens=24, eos=False)
            out = compiled.generate(batch, max_new_tokens=24, eos=False)
            assert out.tokens == ref.tokens
            assert all(torch.equal(a, b) for a, b in zip(ref.routing, out.routing, strict=True))
    assert compiled._compiled_decode is not None, "the compiled step fell back to eager"
    assert not caplog.records


def test_compile_failure_falls_back_to_eager(model, caplog):
    def broken(*_args):
        raise RuntimeError("C++ compile failed: no such file g++")

    prompts = [[1, 2, 3], [7, 8, 9, 10]]
    ref = model.generate(prompts, max_new_tokens=10, eos=False)
    model._compiled_decode = broken
    try:
        with caplog.at_level(logging.WARNING, logger="moe_engine.model"):
            out = model.generate(prompts, max_new_tokens=10, eos=False)
    finally:
        model._compiled_decode = None
    assert out.tokens == ref.tokens
    assert "compiled decode failed (RuntimeError: C++ compile failed" in caplog.text
    assert len(caplog.records) == 1  # warned once, then eager for good


def test_compile_decode_is_cpu_only(model):
    meta = type(model)(model.args).to("meta")
    with pytest.raises(ValueError, match="CPU models; this one is on meta"):
        meta.compile_decode()


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2)])
def test_decode_attention_matches_sdpa(heads, kv_heads):
    """The written-out attention the compiled step uses: same as SDPA, GQA and a ragged mask."""
    from moe_engine.model import decode_attention

    g = torch.Generator().manual_seed(0)
    B, S, D = 3, 11, 16
    q = torch.randn(B, heads, 1, D, generator=g)
    k, v = (torch.randn(B, kv_heads, S, D, generator=g) for _ in range(2))
    visible = torch.tensor([11, 4, 1])  # rows with different cache lengths, one seeing a single key
    mask = (torch.arange(S)[None, :] < visible[:, None])[:, None, None, :]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv_heads != heads)
    torch.testing.assert_close(decode_attention(q, k, v, mask), ref, atol=1e-6, rtol=1e-5)
