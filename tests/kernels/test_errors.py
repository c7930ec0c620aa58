"""Bad arguments fail with ValueError/TypeError naming the argument, on every backend."""

import pytest
import torch

import kernels
from kernels import SharedExpert

from .interpreter import INTERPRET

T, E, K, H, INTER = 5, 8, 2, 40, 24


def _args(**over):
    a = dict(
        hidden=torch.randn(T, H),
        w_gate_up=torch.randn(E, 2 * INTER, H),
        w_down=torch.randn(E, H, INTER),
        topk_weights=torch.rand(T, K),
        topk_ids=torch.randint(0, E, (T, K), dtype=torch.int32),
    )
    a.update(over)
    return a


BAD_MOE = [
    ("hidden", dict(hidden=torch.randint(0, 3, (T, H))), TypeError, "hidden has dtype torch.int64"),
    ("hidden", dict(hidden=torch.randn(T, H, 1)), ValueError, "hidden must be 2-D"),
    ("hidden", dict(hidden=torch.randn(H, T).t()), ValueError, "hidden must be contiguous"),
    ("hidden", dict(hidden=[[1.0]]), TypeError, "hidden must be a torch.Tensor"),
    ("w_gate_up", dict(w_gate_up=torch.randn(E, 2 * INTER, H).half()), TypeError, "w_gate_up has dtype"),
    ("w_gate_up", dict(w_gate_up=torch.randn(E, 2 * INTER + 1, H)), ValueError, "must be 2\\*I"),
    ("w_gate_up", dict(w_gate_up=torch.randn(E, 2 * INTER, H + 1)), ValueError, "hidden size 40"),
    ("w_gate_up", dict(w_gate_up=torch.randn(E, H, 2 * INTER).transpose(1, 2)), ValueError, "contiguous"),
    ("w_down", dict(w_down=torch.randn(E, INTER, H)), ValueError, "w_down has shape \\(8, 24, 40\\)"),
    ("w_down", dict(w_down=torch.randn(E + 1, H, INTER)), ValueError, "w_down has shape"),
    ("topk_ids", dict(topk_ids=torch.zeros(T, K)), TypeError, "topk_ids has dtype torch.float32"),
    (
        "topk_ids",
        dict(topk_ids=torch.zeros(T + 1, K, dtype=torch.int32)),
        ValueError,
        "first dim must be T=5",
    ),
    ("topk_ids", dict(topk_ids=torch.full((T, K), E, dtype=torch.int32)), ValueError, "max 8"),
    ("topk_ids", dict(topk_ids=torch.full((T, K), -1, dtype=torch.int64)), ValueError, "min -1"),
    ("topk_weights", dict(topk_weights=torch.rand(T, K + 1)), ValueError, "topk_weights has shape"),
    (
        "topk_weights",
        dict(topk_weights=torch.ones(T, K, dtype=torch.int32)),
        TypeError,
        "topk_weights has dtype",
    ),
]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name,over,exc,msg", BAD_MOE, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_MOE)])
def test_fused_moe_rejects(name, over, exc, msg, backend):
    a = _args(**over)
    with pytest.raises(exc, match=msg):
        kernels.fused_moe(**a, backend=backend)


def test_shared_expert_errors():
    with pytest.raises(TypeError, match="kernels.SharedExpert"):
        kernels.fused_moe(**_args(), shared_expert=(torch.randn(8, H), torch.randn(H, 4)))
    se = SharedExpert(torch.randn(8, H), torch.randn(H, 5))
    with pytest.raises(ValueError, match="shared_expert.down has shape"):
        kernels.fused_moe(**_args(), shared_expert=se)
    se = SharedExpert(torch.randn(8, H), torch.randn(H, 4), torch.randn(2, H))
    with pytest.raises(ValueError, match="shared_expert.gate has shape"):
        kernels.fused_moe(**_args(), shared_expert=se)
    se = SharedExpert(torch.randn(8, H).half(), torch.randn(H, 4))
    with pytest.raises(TypeError, match="shared_expert.gate_up has dtype"):
        kernels.fused_moe(**_args(), shared_expert=se)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gating_errors(backend):
    x = torch.randn(T, E)
    with pytest.raises(ValueError, match="top_k=9 must be in \\[1, num_experts=8\\]"):
        kernels.topk_gating(x, 9, True, backend=backend)
    with pytest.raises(ValueError, match="top_k=0"):
        kernels.topk_gating(x, 0, True, backend=backend)
    with pytest.raises(TypeError, match="top_k must be an int"):
        kernels.topk_gating(x, 2.0, True, backend=backend)
    with pytest.raises(ValueError, match="scoring must be"):
        kernels.topk_gating(x, 2, True, scoring="softmax2", backend=backend)
    with pytest.raises(ValueError, match="router_logits must be 2-D"):
        kernels.topk_gating(x[0], 2, True, backend=backend)
    with pytest.raises(ValueError, match="router_logits must be contiguous"):
        kernels.topk_gating(torch.randn(E, T).t(), 2, True, backend=backend)


def test_rms_norm_errors():
    x = torch.randn(3, H)
    with pytest.raises(ValueError, match="weight has shape"):
        kernels.rms_norm(x, torch.ones(H + 1))
    with pytest.raises(TypeError, match="weight has dtype"):
        kernels.rms_norm(x, torch.ones(H).half())
    with pytest.raises(ValueError, match="residual has shape"):
        kernels.rms_norm(x, torch.ones(H), residual=torch.randn(4, H))


def test_empty_batch_is_fine():
    a = _args(
        hidden=torch.randn(0, H),
        topk_weights=torch.rand(0, K),
        topk_ids=torch.zeros(0, K, dtype=torch.int32),
    )
    for backend in ("torch", "triton") if INTERPRET else ("torch",):
        assert kernels.fused_moe(**a, backend=backend).shape == (0, H)
        w, ids = kernels.topk_gating(torch.randn(0, E), K, True, backend=backend)
        assert w.shape == ids.shape == (0, K)
