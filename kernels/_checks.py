"""Argument validation shared by every backend: ValueError/TypeError that name the bad argument."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def tensor(name: str, t: object, ndim: int, dtypes: tuple[torch.dtype, ...] | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} has dtype {t.dtype}; expected one of {allowed}")
    if not t.is_contiguous():
        raise ValueError(
            f"{name} must be contiguous (shape {tuple(t.shape)}, stride {t.stride()}); call .contiguous()"
        )
    return t


def same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; they must match")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def shape(name: str, t: torch.Tensor, expected: tuple[int, ...], why: str) -> None:
    if tuple(t.shape) != expected:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {expected} ({why})")


def gating_args(router_logits: object, top_k: object, scoring: str) -> torch.Tensor:
    x = tensor("router_logits", router_logits, 2, FLOAT_DTYPES)
    if scoring not in ("softmax", "sigmoid"):
        raise ValueError(f"scoring must be 'softmax' or 'sigmoid', got {scoring!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise TypeError(f"top_k must be an int, got {type(top_k).__name__}")
    if not 1 <= top_k <= x.shape[1]:
        raise ValueError(f"top_k={top_k} must be in [1, num_experts={x.shape[1]}]")
    return x


def moe_args(hidden, w_gate_up, w_down, topk_weights, topk_ids, shared_expert) -> None:
    hidden = tensor("hidden", hidden, 2, FLOAT_DTYPES)
    T, H = hidden.shape
    tensor("w_gate_up", w_gate_up, 3)
    same("w_gate_up", w_gate_up, "hidden", hidden)
    E, two_i, h2 = w_gate_up.shape
    if two_i % 2 or two_i == 0:
        raise ValueError(f"w_gate_up.shape[1]={two_i} must be 2*I (gate rows then up rows), even and > 0")
    if h2 != H:
        raise ValueError(f"w_gate_up has shape {tuple(w_gate_up.shape)}; last dim must be hidden size {H}")
    tensor("w_down", w_down, 3)
    same("w_down", w_down, "hidden", hidden)
    shape("w_down", w_down, (E, H, two_i // 2), "[E, H, I] from w_gate_up [E, 2I, H]")
    tensor("topk_ids", topk_ids, 2, (torch.int32, torch.int64))
    if topk_ids.shape[0] != T:
        raise ValueError(f"topk_ids has shape {tuple(topk_ids.shape)}; first dim must be T={T}")
    k = topk_ids.shape[1]
    if not 1 <= k <= E:
        raise ValueError(f"topk_ids has k={k} columns; need 1 <= k <= E={E}")
    tensor("topk_weights", topk_weights, 2, FLOAT_DTYPES)
    shape("topk_weights", topk_weights, (T, k), "same as topk_ids")
    for name, t in (("topk_ids", topk_ids), ("topk_weights", topk_weights)):
        if t.device != hidden.device:
            raise ValueError(f"{name} is on {t.device} but hidden is on {hidden.device}")
    # Range check only off-GPU: on CUDA it would force a host sync on every layer. Out-of-range ids
    # on the GPU path are dropped by the align kernel (their slots contribute nothing).
    # Inside torch.compile the check would be a graph break (a host read) on every layer.
    if hidden.device.type != "cuda" and topk_ids.numel() and not torch.compiler.is_compiling():
        lo, hi = (int(v) for v in torch.aminmax(topk_ids))
        if lo < 0 or hi >= E:
            raise ValueError(f"topk_ids must lie in [0, {E - 1}] (E={E}); got min {lo}, max {hi}")
    if shared_expert is not None:
        from .reference import SharedExpert

        if not isinstance(shared_expert, SharedExpert):
            raise TypeError(
                f"shared_expert must be a kernels.SharedExpert, got {type(shared_expert).__name__}"
            )
        gu = tensor("shared_expert.gate_up", shared_expert.gate_up, 2)
        same("shared_expert.gate_up", gu, "hidden", hidden)
        if gu.shape[0] % 2 or gu.shape[1] != H:
            raise ValueError(f"shared_expert.gate_up has shape {tuple(gu.shape)}; expected [2*Is, {H}]")
        d = tensor("shared_expert.down", shared_expert.down, 2)
        same("shared_expert.down", d, "hidden", hidden)
        shape("shared_expert.down", d, (H, gu.shape[0] // 2), "[H, Is]")
        if shared_expert.gate is not None:
            g = tensor("shared_expert.gate", shared_expert.gate, 2)
            same("shared_expert.gate", g, "hidden", hidden)
            shape("shared_expert.gate", g, (1, H), "[1, H] sigmoid gate")
