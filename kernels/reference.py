"""Pure-torch references for the MoE hot path.

These are the CPU path (and the ground truth the Triton kernels are tested against). They are
differentiable end to end, so the same functions are used for training on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SharedExpert:
    """A Qwen2-MoE style shared expert that every token goes through.

    gate_up: [2*Is, H]  gate rows first, then up rows (same fused layout as the routed experts).
    down:    [H, Is]
    gate:    [1, H] or None. When given, the shared expert's output is scaled per token by
             sigmoid(x @ gate.T) (Qwen2-MoE's ``shared_expert_gate``); None means weight 1.
    All three must have hidden's dtype and device.
    """

    gate_up: torch.Tensor
    down: torch.Tensor
    gate: torch.Tensor | None = None


def topk_gating_ref(
    router_logits: torch.Tensor, top_k: int, renormalize: bool, scoring: str = "softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax (or sigmoid) in fp32, then torch.topk: ids and tie order are torch.topk's own."""
    x = router_logits.float()
    scores = torch.softmax(x, dim=-1) if scoring == "softmax" else torch.sigmoid(x)
    weights, ids = torch.topk(scores, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids.to(torch.int32)


def expert_mlp(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """down(silu(gate x) * up x) for one expert; gate rows are the first half of gate_up."""
    # SiLU*up in (at least) fp32, rounded once, as the Triton kernel does
    gu = (x @ gate_up.t()).to(torch.promote_types(x.dtype, torch.float32))
    inter = gate_up.shape[0] // 2
    return (F.silu(gu[:, :inter]) * gu[:, inter:]).to(x.dtype) @ down.t()


def _shared(hidden: torch.Tensor, shared: SharedExpert) -> torch.Tensor:
    y = expert_mlp(hidden, shared.gate_up, shared.down)
    if shared.gate is not None:
        y = y * torch.sigmoid(hidden @ shared.gate.t())
    return y


def sort_by_expert(topk_ids: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, counts): flat (token, slot) indices grouped by expert (stable), tokens per expert."""
    flat = topk_ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts)
    return order, counts


def fused_moe_ref(
    hidden: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    shared_expert: SharedExpert | None = None,
    use_grouped_mm: bool | None = None,
) -> torch.Tensor:
    """Sorted-by-expert MoE: one matmul pair per *active* expert over a contiguous slice.

    ``use_grouped_mm=None`` picks torch._grouped_mm on CPU for fp32/fp16/bf16 when there are at
    least as many (token, slot) pairs as experts (measured faster there, see docs/benchmarks.md)
    and the Python loop over active experts otherwise (decode-sized batches, fp64, CUDA, torch
    builds without _grouped_mm). Both are differentiable and give the same numbers.

    Matmuls run in hidden's dtype; the per-slot weighting and the top-k sum run in fp32 (the
    Triton path accumulates the same way), then the result is cast back to hidden's dtype.
    """
    T, H = hidden.shape
    E, k = w_gate_up.shape[0], topk_ids.shape[1]
    order, counts = sort_by_expert(topk_ids, E)
    token_of = order // k
    xs = hidden[token_of]  # [T*k, H], grouped by expert
    if use_grouped_mm is None:
        use_grouped_mm = (
            hasattr(torch, "_grouped_mm")
            and hidden.device.type == "cpu"
            and hidden.dtype in (torch.float32, torch.float16, torch.bfloat16)
            # _grouped_mm wants 16-byte aligned strides
            and H * hidden.element_size() % 16 == 0
            and w_down.shape[2] * hidden.element_size() % 16 == 0
            # _grouped_mm pays per group, empty or not: with fewer slots than experts (decode)
            # the loop over the few active experts is faster
            and topk_ids.numel() >= E
        )
    if use_grouped_mm:
        ys = _grouped_experts(xs, w_gate_up, w_down, counts)
    else:
        ys = torch.empty(0, H, dtype=hidden.dtype, device=hidden.device)
        parts, start = [], 0
        # one host read of the counts; the loop then only visits experts that received tokens
        for e, n in enumerate(counts.tolist()):
            if n:
                parts.append(expert_mlp(xs[start : start + n], w_gate_up[e], w_down[e]))
                start += n
        if parts:
            ys = torch.cat(parts)
    acc = torch.promote_types(hidden.dtype, torch.float32)  # fp64 stays fp64 (gradcheck)
    ys = ys.to(acc) * topk_weights.reshape(-1)[order].to(acc).unsqueeze(1)
    out = torch.zeros(T, H, dtype=acc, device=hidden.device).index_add(0, token_of, ys)
    if shared_expert is not None:
        out = out + _shared(hidden, shared_expert).to(acc)
    return out.to(hidden.dtype)


def _grouped_experts(
    xs: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    offs = torch.cumsum(counts, 0).to(torch.int32)
    gu = torch._grouped_mm(xs, w_gate_up.transpose(1, 2), offs=offs).float()
    inter = w_gate_up.shape[1] // 2
    h = (F.silu(gu[:, :inter]) * gu[:, inter:]).to(xs.dtype)
    return torch._grouped_mm(h, w_down.transpose(1, 2), offs=offs)


def fused_moe_gather(
    hidden: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    shared_expert: SharedExpert | None = None,
) -> torch.Tensor:
    """The same sum written per (token, slot): index each slot's expert weights, multiply, reduce.

    Eagerly this materialises the gathered weights ([T, k, 2I, H]) and is slow; it exists for
    torch.compile on CPU, where inductor fuses the indexing into the reductions, so a decode step
    streams only the active experts' rows once, at close to memory bandwidth, with no host sync
    and no per-expert loop (docs/benchmarks.md § engine). Accumulation as in fused_moe_ref.
    """
    inter = w_down.shape[2]
    acc = torch.promote_types(hidden.dtype, torch.float32)
    ids = topk_ids.long()
    gu = (w_gate_up[ids] * hidden[:, None, None, :]).sum(-1).to(acc)  # [T, k, 2I]
    h = (F.silu(gu[..., :inter]) * gu[..., inter:]).to(hidden.dtype)
    ys = (w_down[ids] * h[:, :, None, :]).sum(-1)  # [T, k, H]
    out = (ys.to(acc) * topk_weights.to(acc)[..., None]).sum(1)
    if shared_expert is not None:
        out = out + _shared(hidden, shared_expert).to(acc)
    return out.to(hidden.dtype)


def fused_moe_naive(
    hidden: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    shared_expert: SharedExpert | None = None,
) -> torch.Tensor:
    """Per-token, per-slot dense loop in fp32: the slow, obviously-correct definition."""
    out = torch.zeros(hidden.shape, dtype=torch.float32)
    for t in range(hidden.shape[0]):
        x = hidden[t : t + 1].float()
        for j in range(topk_ids.shape[1]):
            e = int(topk_ids[t, j])
            y = expert_mlp(x, w_gate_up[e].float(), w_down[e].float())
            out[t] += float(topk_weights[t, j]) * y[0]
        if shared_expert is not None:
            s = SharedExpert(
                shared_expert.gate_up.float(),
                shared_expert.down.float(),
                None if shared_expert.gate is None else shared_expert.gate.float(),
            )
            out[t] += _shared(x, s)[0]
    return out


def rms_norm_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm in fp32 (Llama/Qwen convention: normalise in fp32, cast, then scale by weight).

    With ``residual``: h = x + residual, returns (rms_norm(h), h) — the fused pre-norm pattern.
    """
    h = x if residual is None else x + residual
    hf = h.float()
    y = (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    return y if residual is None else (y, h)
