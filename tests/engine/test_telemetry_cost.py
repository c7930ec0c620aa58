"""Routing counters, load-balance figures, collapse warnings, parameter and FLOP accounting."""
from __future__ import annotations

import math

import pytest
import torch

from moe_engine import build_model
from moe_engine.config import ModelArgs
from moe_engine.cost import Prices, flops_for_tokens, flops_per_token, param_counts
from moe_engine.telemetry import RoutingStats, collapse_warnings, load_balance
from tests.engine.test_generation import CFG


def test_load_balance_figures():
    counts = torch.tensor([[10, 10, 10, 10], [40, 0, 0, 0], [20, 10, 5, 5], [0, 0, 0, 0]])
    s = load_balance(counts)
    assert s["balancedness"][0] == 1 and s["cv"][0] == 0 and abs(s["entropy"][0] - 1) < 1e-9
    assert s["balancedness"][1] == 0.25 and s["entropy"][1] == 0
    assert abs(s["balancedness"][2] - 10 / 20) < 1e-9
    assert abs(s["cv"][2] - torch.tensor([20.0, 10, 5, 5]).std(unbiased=False) / 10) < 1e-6
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])
    assert abs(s["entropy"][2] - float(-(p * p.log()).sum() / math.log(4))) < 1e-9
    assert math.isnan(s["balancedness"][3])


def test_collapse_warning():
    counts = torch.tensor([[100, 100, 90, 110], [390, 5, 3, 2]])
    w = collapse_warnings(counts, layer_ids=[0, 2])
    assert len(w) == 1 and w[0].layer == 1 and "layer 2" in w[0].message and "expert 0" in w[0].message


def test_stats_ignore_padding_and_snapshot_is_json_ready():
    st = RoutingStats(2, 4)
    ids = [torch.tensor([[0, 1], [2, 3], [0, 0]]), torch.tensor([[1, 1], [1, 2], [3, 3]])]
    st.update(ids, valid=torch.tensor([True, True, False]))
    assert st.matrix().tolist() == [[1, 1, 1, 1], [0, 3, 1, 0]]
    snap = st.snapshot()
    assert snap["tokens"] == 2 and snap["balancedness"][0] == 1.0
    st.reset()
    assert st.snapshot()["balancedness"] == [None, None]


def test_generation_updates_model_counters():
    m = build_model(CFG, seed=0)
    m.telemetry.reset()
    out = m.generate([[1, 2, 3], [4, 5]], max_new_tokens=6, eos=False)
    counts = m.telemetry.matrix()
    fed = sum(r.shape[1] for r in out.routing)
    assert counts.sum(1).tolist() == [fed * 2, fed * 2]  # top-2 per fed token per layer, padding excluded
    per_req = torch.zeros(2, 4, dtype=torch.long)
    for r in out.routing:
        for layer in range(2):
            per_req[layer] += torch.bincount(r[layer].flatten().long(), minlength=4)
    assert torch.equal(per_req, counts)


def test_param_counts_match_the_module():
    for arch_cfg in (CFG, dict(CFG, architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe",
                               moe_intermediate_size=8, shared_expert_intermediate_size=24,
                               mlp_only_layers=[1], qkv_bias=True)):
        m = build_model(arch_cfg)
        pc = param_counts(m.args)
        assert pc.total == sum(p.numel() for p in m.parameters())
        E, k = m.args.num_experts, m.args.top_k
        per_expert = 3 * m.args.hidden_size * m.args.moe_intermediate_size
        n_moe = len(m.args.moe_layers)
        assert pc.total - pc.active == n_moe * (E - k) * per_expert
        assert pc.dense - pc.active == n_moe * (E - k) * per_expert


def test_olmoe_1b_7b_numbers():
    cfg = {"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "vocab_size": 50304, "hidden_size": 2048,
           "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 16,
           "intermediate_size": 1024, "num_experts": 64, "num_experts_per_tok": 8}
    pc = param_counts(ModelArgs.from_hf(cfg))
    assert 6.8e9 < pc.total < 7.0e9  # "7B"
    assert 1.2e9 < pc.active < 1.4e9  # "1B" active (1.3B on the model card)
    a = ModelArgs.from_hf(cfg)
    f = flops_per_token(a, ctx=1)
    assert f == 2 * (pc.active - pc.embedding) + 4 * 16 * 2048
    assert flops_for_tokens(a, 0, 3) == sum(flops_per_token(a, c) for c in (1, 2, 3))
    assert flops_per_token(a, 1, dense=True) / f > 4  # the saving MoE buys


def test_prices():
    p = Prices(gpu_hour=3.6, cpu_hour=0.36)
    assert p.cost(10, "cuda") == pytest.approx(0.01) and p.cost(10, "cpu") == pytest.approx(0.001)
    m = build_model(CFG)
    u = m.generate([[1, 2]], max_new_tokens=3, eos=False, prices=p).usage[0]
    assert u.cost_usd == pytest.approx(u.device_seconds / 3600 * 0.36)
    assert u.dense_flops > u.flops and u.as_dict()["flops_saving"] > 1
