"""Fused MoE on Triton: align -> gate_up GEMM (+SiLU*up) -> down GEMM (+routing weight) -> top-k sum.

No per-expert Python loop and no host sync: every buffer is sized by the upper bound
T*k + (E+1)*(BLOCK_M-1), and the GEMM programs that fall past the real padded length exit early
after reading it from device memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import get_config
from .reference import SharedExpert

# Tests set this to NaN so that any element a kernel forgets to write shows up in the result.
POISON: float | None = None


def _empty(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.empty(*shape, dtype=dtype, device=device)
    return t if POISON is None else t.fill_(POISON)


# Up to this many (token, slot) pairs the align step is one single-program Triton launch (decode
# and short prefill, where launch count dominates); above it, a handful of parallel torch ops.
ALIGN_KERNEL_MAX_SLOTS = 4096
# shared memory the GEMM pipelines may use (H100/A100 allow ~227/163 KiB per block)
SMEM_BUDGET = 160 * 1024


def align_capacity(num_slots: int, num_experts: int, block_m: int) -> int:
    """Upper bound on the padded length: every bucket (E experts + invalid ids) wastes < block_m."""
    return triton.cdiv(num_slots + (num_experts + 1) * (block_m - 1), block_m) * block_m


def moe_align(
    topk_ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group the T*k (token, slot) pairs by expert, each group padded to a multiple of block_m.

    Returns sorted_ids [P] (flat slot index t*k+j, T*k for padding), block_expert [P/block_m]
    (expert of each block, -1 for blocks of invalid ids or past the end) and num_padded [1]
    (padded length of the real experts' blocks). Invalid ids (outside [0, E)) go to an extra
    bucket right after them, whose blocks are marked -1. Nothing here syncs the host.
    """
    if topk_ids.numel() <= ALIGN_KERNEL_MAX_SLOTS:
        return moe_align_triton(topk_ids, num_experts, block_m)
    return moe_align_torch(topk_ids, num_experts, block_m)


@triton.jit
def _align_kernel(
    ids_ptr,
    sorted_ptr,
    block_expert_ptr,
    num_padded_ptr,
    cursor_ptr,
    n,
    E,
    cap,
    BLOCK_M: tl.constexpr,
    NB: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # one program: histogram -> padded offsets -> fill -> scatter with per-bucket atomic cursors.
    # Bucket E collects invalid ids, bucket NB-1 (> E) swallows the masked lanes.
    bins = tl.arange(0, NB)
    counts = tl.zeros([NB], dtype=tl.int32)
    for s in range(0, n, BLOCK):
        offs = s + tl.arange(0, BLOCK)
        ok = offs < n
        raw = tl.load(ids_ptr + offs, mask=ok, other=0)
        e = tl.where((raw >= 0) & (raw < E), raw, E).to(tl.int32)
        counts += tl.histogram(tl.where(ok, e, NB - 1), NB)
    counts = tl.where(bins <= E, counts, 0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    pad_start = tl.cumsum(padded, 0) - padded
    tl.store(num_padded_ptr, tl.sum(tl.where(bins < E, padded, 0), 0))
    tl.store(cursor_ptr + bins, pad_start)
    for p in range(0, cap, BLOCK):
        offs = p + tl.arange(0, BLOCK)
        tl.store(sorted_ptr + offs, n, mask=offs < cap)
    for b in range(0, cap // BLOCK_M, BLOCK):
        offs = b + tl.arange(0, BLOCK)
        tl.store(block_expert_ptr + offs, -1, mask=offs < cap // BLOCK_M)
    tl.debug_barrier()  # cursors and fills visible to every thread before the scatter
    for s in range(0, n, BLOCK):
        offs = s + tl.arange(0, BLOCK)
        ok = offs < n
        raw = tl.load(ids_ptr + offs, mask=ok, other=0)
        e = tl.where((raw >= 0) & (raw < E), raw, E).to(tl.int32)
        pos = tl.atomic_add(cursor_ptr + e, 1, mask=ok)
        tl.store(sorted_ptr + pos, offs, mask=ok)
        # every block of a bucket holds at least one real slot, so this marks them all
        tl.store(block_expert_ptr + pos // BLOCK_M, tl.where(e < E, e, -1), mask=ok)


def moe_align_triton(
    topk_ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dev = topk_ids.device
    n = topk_ids.numel()
    cap = align_capacity(n, num_experts, block_m)
    nb = triton.next_power_of_2(num_experts + 2)
    sorted_ids = torch.empty(cap, dtype=torch.int32, device=dev)
    block_expert = torch.empty(cap // block_m, dtype=torch.int32, device=dev)
    num_padded = torch.empty(1, dtype=torch.int32, device=dev)
    cursor = torch.empty(nb, dtype=torch.int32, device=dev)
    _align_kernel[(1,)](
        topk_ids, sorted_ids, block_expert, num_padded, cursor, n, num_experts, cap,
        BLOCK_M=block_m, NB=nb, BLOCK=1024, num_warps=8,
    )  # fmt: skip
    return sorted_ids, block_expert, num_padded


def moe_align_torch(
    topk_ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """moe_align from parallel torch ops (stable order; scatter_add, not bincount, to avoid a sync)."""
    dev = topk_ids.device
    n = topk_ids.numel()
    E = num_experts
    flat = topk_ids.reshape(-1).long()
    flat = torch.where((flat >= 0) & (flat < E), flat, E)
    counts = torch.zeros(E + 1, dtype=torch.long, device=dev).scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    pad_end = torch.cumsum(padded, 0)
    pad_start = pad_end - padded
    start = torch.cumsum(counts, 0) - counts
    expert_sorted, order = torch.sort(flat, stable=True)
    rank = torch.arange(n, device=dev) - start[expert_sorted]
    cap = align_capacity(n, E, block_m)
    sorted_ids = torch.full((cap,), n, dtype=torch.int32, device=dev)
    sorted_ids.scatter_(0, pad_start[expert_sorted] + rank, order.to(torch.int32))  # no sync
    block_start = torch.arange(0, cap, block_m, device=dev)
    block_expert = torch.searchsorted(pad_end, block_start, right=True)
    block_expert = torch.where(block_expert < E, block_expert, -1).to(torch.int32)
    num_padded = pad_end[E - 1 : E].to(torch.int32)  # the invalid bucket's blocks are never run
    return sorted_ids, block_expert, num_padded


@triton.jit
def _tile_ids(pid, num_m, num_n, GROUP_M: tl.constexpr):
    # grouped ordering: GROUP_M row-blocks share each weight tile while it is hot in L2
    width = GROUP_M * num_n
    group = pid // width
    first_m = group * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    return pid_m, pid_n


@triton.jit
def _gate_up_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    sorted_ids_ptr,
    block_expert_ptr,
    num_padded_ptr,
    num_slots,
    H,
    INTER,
    num_m,
    TOP_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """out[slot, n] = silu(x[tok] . w[e, n]) * (x[tok] . w[e, INTER + n]) for the block's slots."""
    num_n = tl.cdiv(INTER, BLOCK_N)
    pid_m, pid_n = _tile_ids(tl.program_id(0), num_m, num_n, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    e = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    if e < 0:
        return
    slots = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    slot_ok = slots < num_slots
    tok = (slots // TOP_K).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < INTER
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = x_ptr + tok[:, None] * H + offs_k[None, :]
    w_base = w_ptr + e * (2 * INTER) * H
    g_ptrs = w_base + offs_n[None, :].to(tl.int64) * H + offs_k[:, None]
    u_ptrs = g_ptrs + INTER * H
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k_ok = offs_k + k0 < H
        a = tl.load(a_ptrs, mask=slot_ok[:, None] & k_ok[None, :], other=0.0)
        g = tl.load(g_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        u = tl.load(u_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc_g = tl.dot(a, g, acc_g, input_precision=PRECISION)
        acc_u = tl.dot(a, u, acc_u, input_precision=PRECISION)
        a_ptrs += BLOCK_K
        g_ptrs += BLOCK_K
        u_ptrs += BLOCK_K
    h = acc_g * tl.sigmoid(acc_g) * acc_u
    o_ptrs = out_ptr + slots[:, None].to(tl.int64) * INTER + offs_n[None, :]
    tl.store(o_ptrs, h.to(out_ptr.dtype.element_ty), mask=slot_ok[:, None] & n_ok[None, :])


@triton.jit
def _down_kernel(
    h_ptr,
    w_ptr,
    out_ptr,
    topk_w_ptr,
    sorted_ids_ptr,
    block_expert_ptr,
    num_padded_ptr,
    num_slots,
    H,
    INTER,
    num_m,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """out[slot, n] = topk_w[slot] * (h[slot] . w_down[e, n]); invalid-id slots get zeros."""
    num_n = tl.cdiv(H, BLOCK_N)
    pid_m, pid_n = _tile_ids(tl.program_id(0), num_m, num_n, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        # past the real experts: this is the invalid-id bucket (or nothing); zero its slots so
        # the top-k sum reads defined values
        slots = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        zero = tl.zeros([BLOCK_M, BLOCK_N], dtype=out_ptr.dtype.element_ty)
        o_ptrs = out_ptr + slots[:, None].to(tl.int64) * H + offs_n[None, :]
        tl.store(o_ptrs, zero, mask=(slots < num_slots)[:, None] & (offs_n < H)[None, :])
        return
    e = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    slots = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    slot_ok = slots < num_slots
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < H
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = h_ptr + slots[:, None].to(tl.int64) * INTER + offs_k[None, :]
    b_ptrs = w_ptr + e * H * INTER + offs_n[None, :].to(tl.int64) * INTER + offs_k[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, INTER, BLOCK_K):
        k_ok = offs_k + k0 < INTER
        a = tl.load(a_ptrs, mask=slot_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    wt = tl.load(topk_w_ptr + slots, mask=slot_ok, other=0.0).to(tl.float32)
    acc = acc * wt[:, None]
    o_ptrs = out_ptr + slots[:, None].to(tl.int64) * H + offs_n[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=slot_ok[:, None] & n_ok[None, :])


@triton.jit
def _topk_sum_kernel(
    y_ptr,
    shared_ptr,
    out_ptr,
    H,
    TOP_K: tl.constexpr,
    HAS_SHARED: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """out[t] = sum_j y[t*k + j] (+ shared[t]), summed in fp32."""
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = offs < H
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        acc += tl.load(y_ptr + (t * TOP_K + j) * H + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_SHARED:
        acc += tl.load(shared_ptr + t * H + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * H + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


def _shared_expert(hidden: torch.Tensor, se: SharedExpert) -> torch.Tensor:
    # a dense MLP over every token: cuBLAS already runs it at the matmul roofline
    inter = se.gate_up.shape[0] // 2
    gu = hidden @ se.gate_up.t()
    y = (torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]) @ se.down.t()
    if se.gate is not None:
        y = y * torch.sigmoid(hidden @ se.gate.t())
    return y.contiguous()


def fused_moe_triton(
    hidden: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    shared_expert: SharedExpert | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    T, H = hidden.shape
    E, two_i, _ = w_gate_up.shape
    inter = two_i // 2
    k = topk_ids.shape[1]
    out = _empty(T, H, dtype=hidden.dtype, device=hidden.device)
    if T == 0:
        return out
    cfg = config or get_config(T, E, inter, k, hidden.device)
    bm, bn, bk, gm = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["GROUP_M"]
    # keep the software pipeline inside shared memory: a table tuned for bf16 would overflow it
    # with fp32 operands (gate_up holds one A tile and two B tiles per stage)
    stage_bytes = (bm * bk + 2 * bk * bn) * hidden.element_size()
    stages = max(1, min(cfg["num_stages"], SMEM_BUDGET // stage_bytes))
    launch = dict(num_warps=cfg["num_warps"], num_stages=stages)
    # fp32 callers get fp32 products, not tf32 (the setting only affects fp32 operands)
    precision = "ieee" if hidden.dtype == torch.float32 else "tf32"
    sorted_ids, block_expert, num_padded = moe_align(topk_ids, E, bm)
    num_m = block_expert.numel()
    n_slots = T * k
    h = _empty(n_slots, inter, dtype=hidden.dtype, device=hidden.device)
    _gate_up_kernel[(num_m * triton.cdiv(inter, bn),)](
        hidden, w_gate_up, h, sorted_ids, block_expert, num_padded,
        n_slots, H, inter, num_m,
        TOP_K=k, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, PRECISION=precision, **launch,
    )  # fmt: skip
    if k == 1 and shared_expert is None:
        y = out  # nothing to sum: the down GEMM writes the output rows directly
    else:
        y = _empty(n_slots, H, dtype=hidden.dtype, device=hidden.device)
    topk_w = topk_weights.reshape(-1)
    _down_kernel[(num_m * triton.cdiv(H, bn),)](
        h, w_down, y, topk_w, sorted_ids, block_expert, num_padded,
        n_slots, H, inter, num_m,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, PRECISION=precision, **launch,
    )  # fmt: skip
    if y is out:
        return out
    shared = _shared_expert(hidden, shared_expert) if shared_expert is not None else y
    block_h = min(1024, triton.next_power_of_2(H))
    _topk_sum_kernel[(T, triton.cdiv(H, block_h))](
        y, shared, out, H, TOP_K=k, HAS_SHARED=shared_expert is not None, BLOCK_H=block_h
    )
    return out
