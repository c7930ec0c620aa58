"""RMSNorm, optionally fused with the residual add (optional kernel: not yet measured on a GPU)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    y_ptr,
    h_ptr,
    H,
    eps,
    HAS_RES: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_H)
    ok = offs < H
    x = tl.load(x_ptr + row * H + offs, mask=ok, other=0.0)
    if HAS_RES:
        # h is rounded to the input dtype before the norm, as x + residual in torch would be
        x = x + tl.load(res_ptr + row * H + offs, mask=ok, other=0.0)
        tl.store(h_ptr + row * H + offs, x, mask=ok)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / H + eps)
    w = tl.load(w_ptr + offs, mask=ok, other=0.0)
    y = (xf * rstd).to(x.dtype) * w
    tl.store(y_ptr + row * H + offs, y, mask=ok)


def rms_norm_triton(
    x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    H = x.shape[-1]
    rows = x.numel() // H if H else 0
    y = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else y
    if rows:
        _rms_norm_kernel[(rows,)](
            x, residual if residual is not None else x, weight, y, h, H, eps,
            HAS_RES=residual is not None, BLOCK_H=triton.next_power_of_2(H),
        )  # fmt: skip
    return y if residual is None else (y, h)
