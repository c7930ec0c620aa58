"""Fused router gating: softmax (or sigmoid) + top-k + optional renormalisation, one pass per row."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

POISON: float | None = None


@triton.jit
def _topk_gating_kernel(
    logits_ptr,
    w_ptr,
    ids_ptr,
    T,
    E,
    stride_t,
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_K: tl.constexpr,
    RENORM: tl.constexpr,
    SIGMOID: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < T
    col_ok = cols < E
    x = tl.load(
        logits_ptr + rows[:, None] * stride_t + cols[None, :],
        mask=row_ok[:, None] & col_ok[None, :],
        other=0.0,
    ).to(tl.float32)
    if SIGMOID:
        s = tl.sigmoid(x)
    else:
        x = tl.where(col_ok[None, :], x, float("-inf"))
        e = tl.exp(x - tl.max(x, axis=1)[:, None])
        s = e / tl.sum(e, axis=1)[:, None]
    # scores are >= 0, so -1 marks padding columns and already-picked experts
    s = tl.where(col_ok[None, :], s, -1.0)
    kcols = tl.arange(0, BLOCK_K)
    wt = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)
    it = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.int32)
    for j in tl.static_range(K):
        best = tl.max(s, axis=1)
        # lowest expert id among exact ties
        idx = tl.min(tl.where(s == best[:, None], cols[None, :], BLOCK_E), axis=1)
        wt = tl.where(kcols[None, :] == j, best[:, None], wt)
        it = tl.where(kcols[None, :] == j, idx[:, None], it)
        s = tl.where(cols[None, :] == idx[:, None], -1.0, s)
    if RENORM:
        wt = wt / tl.sum(wt, axis=1)[:, None]
    out_off = rows[:, None] * K + kcols[None, :]
    out_ok = row_ok[:, None] & (kcols[None, :] < K)
    tl.store(w_ptr + out_off, wt, mask=out_ok)
    tl.store(ids_ptr + out_off, it, mask=out_ok)


def topk_gating_triton(
    router_logits: torch.Tensor, top_k: int, renormalize: bool, scoring: str = "softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    T, E = router_logits.shape
    weights = torch.empty(T, top_k, dtype=torch.float32, device=router_logits.device)
    ids = torch.empty(T, top_k, dtype=torch.int32, device=router_logits.device)
    if POISON is not None:  # test hook: unwritten outputs must not pass
        weights.fill_(POISON)
        ids.fill_(-7)
    if T == 0:
        return weights, ids
    block_e = triton.next_power_of_2(E)
    block_t = max(1, min(triton.next_power_of_2(T), 4096 // block_e))
    _topk_gating_kernel[(triton.cdiv(T, block_t),)](
        router_logits,
        weights,
        ids,
        T,
        E,
        router_logits.stride(0),
        K=top_k,
        BLOCK_T=block_t,
        BLOCK_E=block_e,
        BLOCK_K=triton.next_power_of_2(top_k),
        RENORM=renormalize,
        SIGMOID=scoring == "sigmoid",
    )
    return weights, ids
