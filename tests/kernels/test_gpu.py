"""The compiled Triton kernels on a CUDA device, bf16 included (skipped without CUDA)."""

import pytest
import torch

import kernels
from kernels.reference import fused_moe_ref, rms_norm_ref, topk_gating_ref

from .test_triton import GATING_CASES, MOE_CASES, _assert_same_topk, _moe_inputs, _rel

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("T,E,k,H,inter", [*MOE_CASES, (1024, 64, 8, 2048, 1024)])
def test_gpu_fused_moe_matches_reference(T, E, k, H, inter, dtype):
    x, wgu, wd, w, ids = (t.cuda() for t in _moe_inputs(T, E, k, H, inter, dtype, seed=1))
    out = kernels.fused_moe(x, wgu, wd, w, ids)
    ref = fused_moe_ref(x, wgu, wd, w, ids)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) <= {torch.bfloat16: 1e-2, torch.float16: 1e-3, torch.float32: 1e-5}[dtype]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("T,E,k", GATING_CASES)
def test_gpu_gating_matches_torch_topk(T, E, k, dtype):
    logits = torch.randn(T, E, device="cuda").to(dtype)
    w, ids = kernels.topk_gating(logits, k, True)
    ref_w, ref_ids = topk_gating_ref(logits, k, True)
    _assert_same_topk(logits.cpu(), k, ids.cpu(), ref_ids.cpu())
    assert _rel(w, ref_w) <= 1e-5


@pytest.mark.gpu
@cuda
def test_gpu_rms_norm_bf16():
    x, res = torch.randn(2, 33, 2048, device="cuda", dtype=torch.bfloat16).unbind(0)
    wt = torch.randn(2048, device="cuda", dtype=torch.bfloat16)
    y, h = kernels.rms_norm(x, wt, residual=res)
    y_ref, h_ref = rms_norm_ref(x, wt, residual=res)
    assert torch.equal(h, h_ref) and _rel(y, y_ref) <= 1e-2


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    from kernels import triton_gating, triton_moe

    monkeypatch.setattr(triton_moe, "POISON", float("nan"))
    monkeypatch.setattr(triton_gating, "POISON", float("nan"))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("T", [1, 64, 1024])  # Triton align (<= 4096 slots) and torch-op align
def test_gpu_path_never_syncs_the_host_and_drops_bad_ids(T):
    x, wgu, wd, w, ids = (t.cuda() for t in _moe_inputs(T, 64, 8, 256, 128, torch.bfloat16, seed=2))
    bad = ids.clone()
    bad[0, 0], bad[-1, -1] = 64, -3
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = kernels.fused_moe(x, wgu, wd, w, bad)
        kernels.topk_gating(torch.randn(T, 64, device="cuda"), 8, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    w0 = w.clone()
    w0[bad != ids] = 0.0
    assert _rel(out, fused_moe_ref(x, wgu, wd, w0, ids)) <= 1e-2


@pytest.mark.gpu
@cuda
def test_gpu_path_is_cuda_graph_capturable():
    x, wgu, wd, w, ids = (t.cuda() for t in _moe_inputs(16, 64, 8, 256, 128, torch.float16, seed=3))
    expected = kernels.fused_moe(x, wgu, wd, w, ids)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = kernels.fused_moe(x, wgu, wd, w, ids)
    x.copy_(torch.randn_like(x))
    graph.replay()
    assert _rel(out, kernels.fused_moe(x, wgu, wd, w, ids)) <= 1e-3
    assert _rel(out, expected) > 1e-2  # the replay really recomputed from the new input
