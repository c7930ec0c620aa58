"""The torch reference (the CPU path) against a naive per-token dense loop, plus autograd."""

import pytest
import torch

import kernels
from kernels.reference import SharedExpert, fused_moe_gather, fused_moe_naive, fused_moe_ref


def _moe_inputs(T, H, inter, E, k, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    wgu = (torch.randn(E, 2 * inter, H, generator=g) / H**0.5).to(dtype)
    wd = (torch.randn(E, H, inter, generator=g) / inter**0.5).to(dtype)
    w, ids = kernels.topk_gating(torch.randn(T, E, generator=g), k, True, backend="torch")
    return x, wgu, wd, w, ids


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("T,E,k", [(1, 8, 1), (7, 8, 2), (33, 60, 4), (57, 64, 8)])
@pytest.mark.parametrize("grouped", [False, True])
def test_reference_matches_naive_loop(T, E, k, grouped):
    x, wgu, wd, w, ids = _moe_inputs(T, 40, 24, E, k)
    out = fused_moe_ref(x, wgu, wd, w, ids, use_grouped_mm=grouped)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert _rel(out, fused_moe_naive(x, wgu, wd, w, ids)) <= 1e-5


def test_reference_shared_expert_matches_naive_loop():
    x, wgu, wd, w, ids = _moe_inputs(9, 40, 24, 8, 2)
    g = torch.Generator().manual_seed(1)
    se = SharedExpert(
        torch.randn(64, 40, generator=g) / 7,
        torch.randn(40, 32, generator=g) / 6,
        torch.randn(1, 40, generator=g) / 7,
    )
    out = kernels.fused_moe(x, wgu, wd, w, ids, shared_expert=se, backend="torch")
    assert _rel(out, fused_moe_naive(x, wgu, wd, w, ids, se)) <= 1e-5


def test_reference_is_differentiable():
    x, wgu, wd, _, _ = _moe_inputs(11, 40, 24, 8, 2)
    logits = torch.randn(11, 8, requires_grad=True)
    x.requires_grad_()
    wgu.requires_grad_()
    wd.requires_grad_()
    w, ids = kernels.topk_gating(logits, 2, True)
    kernels.fused_moe(x, wgu, wd, w, ids).square().sum().backward()
    for t in (x, wgu, wd, logits):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # a gradient check in float64 on a tiny problem: the loop, index_add and gather are all exact
    x, wgu, wd, w, ids = _moe_inputs(3, 6, 4, 4, 2, dtype=torch.float64)
    w = w.double().requires_grad_()
    wgu.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c: fused_moe_ref(a, b, wd, c, ids), (x.requires_grad_(), wgu, w)
    )


def test_gating_reference_is_torch_topk_of_softmax():
    logits = torch.randn(33, 60)
    w, ids = kernels.topk_gating(logits, 8, False, backend="torch")
    ref = torch.topk(torch.softmax(logits.float(), -1), 8)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32
    assert torch.equal(ids.long(), ref.indices) and torch.equal(w, ref.values)
    w2, _ = kernels.topk_gating(logits, 8, True, backend="torch")
    torch.testing.assert_close(w2.sum(-1), torch.ones(33))


def test_grouped_mm_and_loop_paths_give_the_same_gradients():
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no _grouped_mm")
    grads = []
    for grouped in (True, False):
        x, wgu, wd, w, ids = _moe_inputs(33, 40, 24, 8, 2)
        for t in (x, wgu, wd, w):
            t.requires_grad_()
        fused_moe_ref(x, wgu, wd, w, ids, use_grouped_mm=grouped).square().sum().backward()
        grads.append([t.grad for t in (x, wgu, wd, w)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reference_low_precision_on_cpu(dtype):
    x, wgu, wd, w, ids = _moe_inputs(33, 64, 32, 16, 4, dtype=dtype)
    out = kernels.fused_moe(x, wgu, wd, w, ids, backend="torch")
    assert out.dtype == dtype
    assert _rel(out, fused_moe_naive(x, wgu, wd, w, ids)) <= (1e-2 if dtype == torch.bfloat16 else 1e-3)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("tokens", [1, 5])
def test_gather_formulation_equals_sorted_reference(tokens, shared):
    """fused_moe_gather is what the compiled CPU decode step runs; eagerly it must give the same sum."""
    g = torch.Generator().manual_seed(tokens)
    E, H, inter, k = 6, 16, 8, 2
    x = torch.randn(tokens, H, generator=g)
    wgu, wd = torch.randn(E, 2 * inter, H, generator=g), torch.randn(E, H, inter, generator=g)
    w = torch.rand(tokens, k, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(tokens)]).int()
    se = None
    if shared:
        se = SharedExpert(torch.randn(2 * inter, H, generator=g), torch.randn(H, inter, generator=g),
                          torch.randn(1, H, generator=g))
    out = fused_moe_gather(x, wgu, wd, w, ids, se)
    assert out.abs().max() > 0.1
    assert torch.allclose(out, fused_moe_ref(x, wgu, wd, w, ids, se), atol=1e-5, rtol=1e-5)
