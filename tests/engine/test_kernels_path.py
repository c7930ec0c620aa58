"""The engine on the Triton kernels: interpreted on CPU here, compiled on a GPU when there is one."""
from __future__ import annotations

# first: triton itself must be imported with TRITON_INTERPRET=1 for the interpreter to work
from tests.kernels.interpreter import INTERPRET  # isort: skip

import pytest
import torch

from moe_engine import build_model, load_model, save_checkpoint
from tests.engine.test_generation import CFG


@pytest.mark.slow
@pytest.mark.skipif(not INTERPRET, reason="with CUDA the kernels are compiled; the gpu test covers them")
def test_triton_interpreter_path_matches_torch_path(monkeypatch):
    model = build_model(dict(CFG, num_hidden_layers=1), seed=5)
    ids = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.forward(ids)
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        got = model.forward(ids)
    assert (got - ref).abs().max() < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(tmp_path, dtype):
    cpu = build_model(CFG, seed=6)
    save_checkpoint(cpu, tmp_path / "m")
    gpu = load_model(tmp_path / "m", device="cuda", dtype=dtype)
    ids = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = cpu.forward(ids)
        got = gpu.forward(ids.cuda()).float().cpu()
    tol = 1e-3 if dtype == torch.float32 else 0.1 * ref.abs().max()
    assert (got - ref).abs().max() < tol
    out = gpu.generate([[1, 2, 3], [4, 5]], max_new_tokens=8, eos=False)
    assert [len(t) for t in out.tokens] == [8, 8]
    if dtype == torch.float32:
        assert out.tokens == cpu.generate([[1, 2, 3], [4, 5]], max_new_tokens=8, eos=False).tokens
