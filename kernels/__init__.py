"""MoE hot-path kernels: Triton on CUDA, pure-torch references on CPU.

Public API
----------
topk_gating(router_logits, top_k, renormalize, scoring="softmax", *, backend=None)
    -> (topk_weights fp32 [T, k], topk_ids int32 [T, k])
fused_moe(hidden, w_gate_up, w_down, topk_weights, topk_ids, *, shared_expert=None, backend=None)
    -> [T, H] in hidden's dtype
rms_norm(x, weight, eps=1e-6, *, residual=None, backend=None)
SharedExpert(gate_up, down, gate=None)

Backend choice (``backend=None``): CUDA tensors -> Triton; CPU tensors -> torch reference, unless
the environment has TRITON_INTERPRET=1, then the Triton kernels run in the interpreter (that is how
tests check them without a GPU). Inside torch.compile on CPU (the engine's compiled decode step)
``fused_moe`` uses ``fused_moe_gather``, which inductor turns into fused indexed reductions.
``backend="torch"`` or ``"triton"`` forces one. The Triton path is inference only: with autograd
recording and an input that requires grad, ``backend=None`` picks the torch reference and
``backend="triton"`` raises.
"""

from __future__ import annotations

import os

import torch

from . import _checks
from .reference import SharedExpert, fused_moe_gather, fused_moe_ref, rms_norm_ref, topk_gating_ref

__all__ = ["SharedExpert", "fused_moe", "rms_norm", "topk_gating", "triton_available"]


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _pick(backend: str | None, device: torch.device, *tensors: torch.Tensor | None) -> str:
    if backend not in (None, "torch", "triton"):
        raise ValueError(f"backend must be None, 'torch' or 'triton', got {backend!r}")
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if backend == "triton":
        if needs_grad:
            raise ValueError("backend='triton' is inference-only; inputs require grad (use backend='torch')")
        if not triton_available():
            raise ValueError("backend='triton' requested but triton is not installed")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"backend='triton' needs CUDA tensors or TRITON_INTERPRET=1 (tensors on {device})"
            )
        return "triton"
    if backend == "torch" or needs_grad or not triton_available():
        return "torch"
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return "triton"
    return "torch"


def topk_gating(
    router_logits: torch.Tensor,
    top_k: int,
    renormalize: bool,
    scoring: str = "softmax",
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores = softmax(logits) (or sigmoid) in fp32, top-k, optional renormalisation to sum 1.

    Returns (topk_weights fp32 [T, k], topk_ids int32 [T, k]), largest first. The torch path is
    literally torch.topk, so ids and tie order are torch.topk's. The Triton kernel breaks exact
    ties by the lowest expert id (torch.topk's CPU tie order is implementation-defined and not
    always lowest-first); the weights are identical either way.
    """
    x = _checks.gating_args(router_logits, top_k, scoring)
    if _pick(backend, x.device, x) == "torch":
        return topk_gating_ref(x, top_k, renormalize, scoring)
    from .triton_gating import topk_gating_triton

    return topk_gating_triton(x, top_k, renormalize, scoring)


def fused_moe(
    hidden: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    shared_expert: SharedExpert | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """out[t] = sum_j topk_weights[t, j] * down_e(silu(gate_e x_t) * up_e x_t), e = topk_ids[t, j].

    hidden [T, H]; w_gate_up [E, 2I, H] with the I gate rows first, then the I up rows (the fused
    layout transformers uses); w_down [E, H, I]; topk_weights [T, k] (any float dtype, applied in
    fp32); topk_ids [T, k] int32/int64. Weights share hidden's dtype (fp16/bf16/fp32) and device.
    All tensors must be contiguous. ``shared_expert`` (a SharedExpert) adds a Qwen2-MoE shared
    expert: + sigmoid(x @ gate.T) * down_s(silu(gate_s x) * up_s x).

    Expert ids are range-checked on CPU; on CUDA the check would cost a host sync per call, so it
    is skipped and out-of-range ids simply contribute nothing.
    """
    _checks.moe_args(hidden, w_gate_up, w_down, topk_weights, topk_ids, shared_expert)
    tensors = [hidden, w_gate_up, w_down, topk_weights]
    if shared_expert is not None:
        tensors += [shared_expert.gate_up, shared_expert.down, shared_expert.gate]
    if backend is None and hidden.device.type == "cpu" and torch.compiler.is_compiling():
        return fused_moe_gather(hidden, w_gate_up, w_down, topk_weights, topk_ids, shared_expert)
    if _pick(backend, hidden.device, *tensors) == "torch":
        return fused_moe_ref(hidden, w_gate_up, w_down, topk_weights, topk_ids, shared_expert)
    from .triton_moe import fused_moe_triton

    return fused_moe_triton(hidden, w_gate_up, w_down, topk_weights, topk_ids, shared_expert)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    *,
    residual: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dim; with ``residual`` returns (rms_norm(x + residual), x + residual).

    Optional kernel: not measured on a GPU yet, so callers may keep their own RMSNorm.
    """
    x2 = _checks.tensor("x", x, x.dim() if isinstance(x, torch.Tensor) else 2, _checks.FLOAT_DTYPES)
    _checks.tensor("weight", weight, 1)
    _checks.same("weight", weight, "x", x2)
    _checks.shape("weight", weight, (x2.shape[-1],), "[H], H = x.shape[-1]")
    if residual is not None:
        _checks.tensor("residual", residual, x2.dim())
        _checks.same("residual", residual, "x", x2)
        _checks.shape("residual", residual, tuple(x2.shape), "same as x")
    if _pick(backend, x2.device, x2, weight, residual) == "torch":
        return rms_norm_ref(x2, weight, eps, residual)
    from .triton_norm import rms_norm_triton

    return rms_norm_triton(x2, weight, eps, residual)
