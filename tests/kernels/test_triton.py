"""Every Triton kernel against the torch reference, run on CPU through TRITON_INTERPRET=1.

Outputs are poisoned with NaN first (kernels.triton_*.POISON), so an element a kernel forgets to
write fails the comparison. Sizes are awkward on purpose: T in 1/7/33/257, E in 8/60/64, k in
1/2/8, H and I not multiples of the block sizes.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernels
from kernels import triton_gating, triton_moe
from kernels.reference import (
    SharedExpert,
    fused_moe_ref,
    rms_norm_ref,
    topk_gating_ref,
)
from kernels.triton_moe import fused_moe_triton, moe_align_torch, moe_align_triton
from kernels.triton_norm import rms_norm_triton

from .interpreter import needs_interpreter

pytestmark = needs_interpreter

TOL = {torch.float32: 1e-5, torch.float16: 1e-3}


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(triton_moe, "POISON", float("nan"))
    monkeypatch.setattr(triton_gating, "POISON", float("nan"))


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _moe_inputs(T, E, k, H, inter, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    wgu = (torch.randn(E, 2 * inter, H, generator=g) / H**0.5).to(dtype)
    wd = (torch.randn(E, H, inter, generator=g) / inter**0.5).to(dtype)
    w, ids = topk_gating_ref(torch.randn(T, E, generator=g), k, renormalize=True)
    return x, wgu, wd, w, ids


MOE_CASES = [  # (T, E, k, H, I)
    (1, 8, 1, 40, 24),
    (7, 60, 2, 72, 40),
    (33, 64, 8, 100, 56),
    (257, 8, 2, 130, 200),
    (257, 64, 8, 48, 40),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("T,E,k,H,inter", MOE_CASES)
def test_fused_moe_matches_reference(T, E, k, H, inter, dtype, monkeypatch):
    if T == 257:  # over 4096 slots the align step is torch ops; exercise that path here too
        monkeypatch.setattr(triton_moe, "ALIGN_KERNEL_MAX_SLOTS", 100)
    x, wgu, wd, w, ids = _moe_inputs(T, E, k, H, inter, dtype, seed=T * 1000 + E)
    out = fused_moe_triton(x, wgu, wd, w, ids)
    ref = fused_moe_ref(x, wgu, wd, w, ids)
    assert out.shape == (T, H) and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert _rel(out, ref) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("gated", [True, False])
def test_fused_moe_shared_expert(dtype, gated):
    x, wgu, wd, w, ids = _moe_inputs(33, 8, 2, 72, 40, dtype, seed=5)
    g = torch.Generator().manual_seed(6)
    se = SharedExpert(
        (torch.randn(2 * 56, 72, generator=g) / 72**0.5).to(dtype),
        (torch.randn(72, 56, generator=g) / 56**0.5).to(dtype),
        (torch.randn(1, 72, generator=g) / 72**0.5).to(dtype) if gated else None,
    )
    out = kernels.fused_moe(x, wgu, wd, w, ids, shared_expert=se, backend="triton")
    ref = kernels.fused_moe(x, wgu, wd, w, ids, shared_expert=se, backend="torch")
    assert _rel(out, ref) <= TOL[dtype]


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("kernel_align", [True, False])
def test_out_of_range_ids_contribute_nothing_on_the_kernel_path(k, kernel_align, monkeypatch):
    monkeypatch.setattr(triton_moe, "ALIGN_KERNEL_MAX_SLOTS", 4096 if kernel_align else 0)
    # the public API rejects them on CPU; the kernel itself (the CUDA path, which skips the check
    # to avoid a host sync) must drop those slots, not read out of bounds or leave garbage
    x, wgu, wd, w, ids = _moe_inputs(7, 8, k, 40, 24, torch.float32, seed=3)
    bad = ids.clone()
    bad[0, 0], bad[3, k - 1], bad[5, 0] = 8, -1, 1000
    out = fused_moe_triton(x, wgu, wd, w, bad)
    w0 = w.clone()
    w0[bad != ids] = 0.0
    ref = fused_moe_ref(x, wgu, wd, w0, ids)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) <= 1e-5


@pytest.mark.parametrize("align", [moe_align_triton, moe_align_torch], ids=["triton", "torch"])
@pytest.mark.parametrize("T,E,k,block_m", [(1, 8, 1, 16), (33, 60, 2, 16), (257, 64, 8, 64)])
def test_align_groups_every_slot_once_padded_to_block(T, E, k, block_m, align):
    ids = torch.randint(0, E, (T, k), dtype=torch.int32)
    sorted_ids, block_expert, num_padded = align(ids, E, block_m)
    n = T * k
    assert sorted_ids.numel() >= n + E * (block_m - 1)  # the no-sync upper bound
    used = int(num_padded)
    counts = torch.bincount(ids.flatten().long(), minlength=E)
    assert used == int(((counts + block_m - 1) // block_m * block_m).sum())
    real = sorted_ids[:used]
    assert torch.equal(torch.sort(real[real < n].long()).values, torch.arange(n))
    assert (sorted_ids[used:] == n).all()
    for b in range(used // block_m):
        slots = sorted_ids[b * block_m : (b + 1) * block_m].long()
        slots = slots[slots < n]
        assert slots.numel() > 0
        assert (ids.flatten()[slots] == block_expert[b]).all()
    assert (block_expert[used // block_m :] == -1).all()


GATING_CASES = [(1, 8, 1), (7, 60, 2), (33, 64, 8), (257, 64, 8), (33, 128, 8)]


@pytest.mark.parametrize("renorm", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("T,E,k", GATING_CASES)
def test_gating_matches_torch_topk(T, E, k, dtype, renorm):
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(T + E + k)).to(dtype)
    w, ids = kernels.topk_gating(logits, k, renorm, backend="triton")
    ref_w, ref_ids = topk_gating_ref(logits, k, renorm)
    assert w.dtype == torch.float32 and ids.dtype == torch.int32
    _assert_same_topk(logits, k, ids, ref_ids)
    assert _rel(w, ref_w) <= 1e-5


def _assert_same_topk(logits, k, ids, ref_ids):
    """ids == torch.topk's on rows without ties at the top; elsewhere an equally valid top-k.

    fp16 logits repeat values often; torch.topk's tie order there is implementation-defined,
    the kernel's is lowest id first.
    """
    scores = torch.softmax(logits.float(), -1)
    top = torch.topk(scores, min(k + 1, scores.shape[1])).values
    tied = (top[:, 1:] == top[:, :-1]).any(-1)
    assert torch.equal(ids[~tied], ref_ids[~tied])
    torch.testing.assert_close(scores.gather(1, ids.long()), top[:, :k], rtol=1e-6, atol=0)
    assert all(len(set(row)) == k for row in ids.tolist())


def test_gating_sigmoid_scoring():
    logits = torch.randn(33, 60)
    w, ids = kernels.topk_gating(logits, 4, False, scoring="sigmoid", backend="triton")
    ref_w, ref_ids = topk_gating_ref(logits, 4, False, scoring="sigmoid")
    assert torch.equal(ids, ref_ids) and _rel(w, ref_w) <= 1e-5
    assert w.min() > 0.5 and not torch.allclose(w.sum(-1), torch.ones(33))


def test_gating_ties():
    # heavy ties: logits drawn from 3 values. Weights must equal torch.topk's exactly; the kernel
    # breaks ties by lowest expert id, which is what a stable descending sort gives.
    logits = torch.randint(0, 3, (65, 64), generator=torch.Generator().manual_seed(0)).float()
    w, ids = kernels.topk_gating(logits, 8, False, backend="triton")
    ref = torch.topk(torch.softmax(logits, -1), 8)
    torch.testing.assert_close(w, ref.values, rtol=1e-6, atol=0)
    stable = torch.sort(torch.softmax(logits, -1), dim=-1, descending=True, stable=True).indices[:, :8]
    assert torch.equal(ids.long(), stable)
    # all-equal logits (a freshly zero-initialised router): experts 0..k-1, weight 1/k after renorm
    w, ids = kernels.topk_gating(torch.zeros(3, 60), 8, True, backend="triton")
    assert torch.equal(ids, torch.arange(8, dtype=torch.int32).expand(3, 8))
    torch.testing.assert_close(w, torch.full((3, 8), 1 / 8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", [(1, 40), (33, 200), (2, 7, 130)])
def test_rms_norm_matches_reference(shape, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g).to(dtype)
    res = torch.randn(*shape, generator=g).to(dtype)
    wt = torch.randn(shape[-1], generator=g).to(dtype)
    assert _rel(rms_norm_triton(x, wt), rms_norm_ref(x, wt)) <= TOL[dtype]
    y, h = rms_norm_triton(x, wt, residual=res)
    y_ref, h_ref = rms_norm_ref(x, wt, residual=res)
    assert torch.equal(h, h_ref)
    assert _rel(y, y_ref) <= TOL[dtype]


def test_dispatch(monkeypatch):
    cpu = torch.device("cpu")
    x = torch.zeros(2, 2)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels._pick(None, cpu, x) == "triton"
    assert kernels._pick("torch", cpu, x) == "torch"
    # autograd needs the torch path
    assert kernels._pick(None, cpu, x.requires_grad_()) == "torch"
    with pytest.raises(ValueError, match="inference-only"):
        kernels._pick("triton", cpu, x)
    with torch.no_grad():
        assert kernels._pick(None, cpu, x) == "triton"
    monkeypatch.delenv("TRITON_INTERPRET")
    assert kernels._pick(None, cpu, x.detach()) == "torch"
    with pytest.raises(ValueError, match="CUDA tensors or TRITON_INTERPRET=1"):
        kernels._pick("triton", cpu, x.detach())
    with pytest.raises(ValueError, match="backend must be"):
        kernels._pick("cuda", cpu)


def test_public_api_default_backend_runs_the_kernels_under_the_interpreter():
    x, wgu, wd, _, _ = _moe_inputs(7, 8, 2, 40, 24, torch.float16, seed=9)
    logits = torch.randn(7, 8)
    w, ids = kernels.topk_gating(logits, 2, True)
    out = kernels.fused_moe(x, wgu, wd, w, ids)
    assert _rel(out, kernels.fused_moe(x, wgu, wd, w, ids, backend="torch")) <= 1e-3
    wt = torch.ones(40, dtype=torch.float16)
    assert _rel(kernels.rms_norm(x, wt), rms_norm_ref(x, wt)) <= 1e-3


def test_config_table_lookup_uses_nearest_m(tmp_path, monkeypatch):
    from kernels import config

    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    config._load.cache_clear()
    small = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=1, num_warps=4, num_stages=1)
    big = dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=32, GROUP_M=4, num_warps=4, num_stages=1)
    config.config_path(8, 24, "cpu").write_text(f'{{"1": {small}, "64": {big}}}'.replace("'", '"'))
    cpu = torch.device("cpu")
    assert config.get_config(2, 8, 24, 2, cpu) == small
    assert config.get_config(40, 8, 24, 2, cpu) == big
    assert config.get_config(40, 8, 25, 2, cpu) == config.default_config(40, 8, 2, cpu)
    # the table's BLOCK_M feeds the align step too: results must not depend on the config
    x, wgu, wd, w, ids = _moe_inputs(40, 8, 2, 40, 24, torch.float32, seed=2)
    ref = fused_moe_ref(x, wgu, wd, w, ids)
    assert _rel(fused_moe_triton(x, wgu, wd, w, ids), ref) <= 1e-5
    config._load.cache_clear()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    T=st.integers(1, 40),
    E=st.integers(1, 20),
    k_frac=st.floats(0, 1),
    H=st.integers(1, 90),
    inter=st.integers(1, 70),
    renorm=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_moe_random_shapes(T, E, k_frac, H, inter, renorm, seed):
    # edge sizes the fixed cases miss: E = 1, k = E, H or I = 1, T*k not a multiple of anything
    k = 1 + int(k_frac * (E - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g)
    wgu = torch.randn(E, 2 * inter, H, generator=g) / H**0.5
    wd = torch.randn(E, H, inter, generator=g) / inter**0.5
    logits = torch.randn(T, E, generator=g)
    w, ids = kernels.topk_gating(logits, k, renorm, backend="triton")
    ref_w, ref_ids = topk_gating_ref(logits, k, renorm)
    _assert_same_topk(logits, k, ids, ref_ids)
    assert _rel(w, ref_w) <= 1e-5
    out = kernels.fused_moe(x, wgu, wd, w, ids, backend="triton")
    assert _rel(out, fused_moe_ref(x, wgu, wd, w, ids)) <= 1e-5
