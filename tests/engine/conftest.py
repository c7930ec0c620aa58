"""Session fixtures for the engine tests (no database)."""
from __future__ import annotations

import pytest

from moe_engine import build_model
from tests.engine.tiny import ARCHS, make_hf, to_fused

# A tiny random OLMoE for generation tests that need no transformers checkpoint.
CFG = {
    "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "vocab_size": 64, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 32,
    "num_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
    "initializer_range": 0.3, "eos_token_id": 5, "pad_token_id": 0,
}


@pytest.fixture(scope="module")
def model():
    return build_model(CFG, seed=0)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """arch -> (hf model, per-expert dir, fused dir)."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for i, arch in enumerate(ARCHS):
        d = root / arch
        hf = make_hf(arch, d, seed=i)
        out[arch] = (hf, d, to_fused(d, root / f"{arch}_fused"))
    return out


@pytest.fixture(autouse=True)
def _torch_kernels_unless_asked(monkeypatch):
    """Engine tests run the kernels' torch path; the Triton interpreter is opted into per test."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
