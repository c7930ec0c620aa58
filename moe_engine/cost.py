"""Cost model: parameter counts, FLOPs per token, and money from measured device seconds.

Conventions (documented so numbers are comparable):
- total_params: every weight in the checkpoint (embeddings included, tied ones counted once).
- active_params: weights one token touches: embedding row table and lm_head (as model cards count
  them), attention, norms, routers, the top-k routed experts, shared experts and dense MLPs.
- FLOPs/token = 2 * N_matmul + 4 * n_layers * ctx * (n_heads * head_dim), where N_matmul is the
  active params minus the input embedding (a lookup, not a matmul) and ctx is the number of keys the
  token attends to (QK^T and AV each cost 2 * ctx * d).
- dense-equivalent FLOPs: the same with every expert active (what the model would cost dense).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from .config import ModelArgs


@dataclass(frozen=True)
class ParamCounts:
    total: int
    active: int
    dense: int  # all experts active
    embedding: int


def param_counts(args: ModelArgs) -> ParamCounts:
    h, d = args.hidden_size, args.head_dim
    attn = h * d * (2 * args.n_heads + 2 * args.n_kv_heads)
    if args.qkv_bias:
        attn += d * (args.n_heads + 2 * args.n_kv_heads)
    if args.o_bias:
        attn += h
    if args.qk_norm == "head":
        attn += 2 * d
    elif args.qk_norm == "full":
        attn += d * (args.n_heads + args.n_kv_heads)
    norms = 2 * h
    expert = 3 * h * args.moe_intermediate_size
    shared = 3 * h * args.shared_expert_intermediate_size + h if args.shared_expert_intermediate_size else 0
    total = active = dense = 0
    for sparse in args.sparse_layers:
        base = attn + norms
        if sparse:
            base += h * args.num_experts + shared
            total += base + args.num_experts * expert
            active += base + args.top_k * expert
            dense += base + args.num_experts * expert
        else:
            mlp = 3 * h * args.intermediate_size
            total, active, dense = total + base + mlp, active + base + mlp, dense + base + mlp
    emb = args.vocab_size * h
    head = args.num_labels * h if args.task == "cls" else (0 if args.tie_word_embeddings else args.vocab_size * h)
    out_head = args.num_labels * h if args.task == "cls" else args.vocab_size * h
    extra = emb + head + h  # embeddings, output head, final norm
    return ParamCounts(total + extra, active + emb + out_head + h, dense + emb + out_head + h, emb)


def attention_flops(args: ModelArgs, ctx: int) -> int:
    return 4 * args.n_layers * ctx * args.n_heads * args.head_dim


def flops_per_token(args: ModelArgs, ctx: int, *, dense: bool = False) -> int:
    pc = param_counts(args)
    n = (pc.dense if dense else pc.active) - pc.embedding
    return 2 * n + attention_flops(args, ctx)


def flops_for_tokens(
    args: ModelArgs, start: int, count: int, *, dense: bool = False, counts: ParamCounts | None = None
) -> int:
    """FLOPs for ``count`` consecutive tokens at positions start..start+count-1 (closed form).

    ``counts``: ``param_counts(args)`` when the caller already has it (per-query loops)."""
    if count <= 0:
        return 0
    pc = counts or param_counts(args)
    n = (pc.dense if dense else pc.active) - pc.embedding
    ctx_sum = count * (2 * start + count + 1) // 2  # sum of (pos + 1)
    return 2 * n * count + 4 * args.n_layers * args.n_heads * args.head_dim * ctx_sum


@dataclass(frozen=True)
class Prices:
    """USD per device-hour; defaults from MOE_PRICE_GPU_HOUR / MOE_PRICE_CPU_HOUR or 2.00 / 0.05."""

    gpu_hour: float = float(os.environ.get("MOE_PRICE_GPU_HOUR", "2.00"))
    cpu_hour: float = float(os.environ.get("MOE_PRICE_CPU_HOUR", "0.05"))

    def cost(self, device_seconds: float, device_type: str) -> float:
        rate = self.gpu_hour if device_type == "cuda" else self.cpu_hour
        return device_seconds / 3600.0 * rate


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    active_params: int
    total_params: int
    flops: int
    dense_flops: int
    wall_seconds: float
    device_seconds: float
    device: str
    cost_usd: float

    @property
    def flops_saving(self) -> float:
        """dense-equivalent / actual FLOPs (how much cheaper routing made this request)."""
        return self.dense_flops / self.flops if self.flops else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "flops_saving": self.flops_saving}


def make_usage(
    args: ModelArgs, prompt_tokens: int, completion_tokens: int, fed_tokens: int, wall: float, device_s: float,
    device_type: str, prices: Prices | None = None, counts: ParamCounts | None = None,
) -> Usage:
    """``fed_tokens``: tokens that went through the model (prompt + generated except the last)."""
    pc = counts or param_counts(args)
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, active_params=pc.active,
        total_params=pc.total, flops=flops_for_tokens(args, 0, fed_tokens, counts=pc),
        dense_flops=flops_for_tokens(args, 0, fed_tokens, dense=True, counts=pc), wall_seconds=wall,
        device_seconds=device_s, device=device_type, cost_usd=(prices or Prices()).cost(device_s, device_type),
    )
