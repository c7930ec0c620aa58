"""Our engine vs transformers on tiny random checkpoints of all four architectures."""
from __future__ import annotations

import pytest
import torch

from moe_engine import load_model, save_checkpoint
from tests.engine.tiny import ARCHS, make_hf


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(tiny, arch, layout):
    hf, per_expert, fused = tiny[arch]
    model = load_model(per_expert if layout == "per_expert" else fused)
    ids = torch.randint(1, 96, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        ours = model.forward(ids)
    assert ref.abs().max() > 0.1  # the check below would be vacuous on near-zero logits
    assert (ours - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_padded_forward_matches_transformers(tiny, arch):
    hf, d, _ = tiny[arch]
    model = load_model(d)
    ids = torch.randint(1, 96, (2, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # right padding
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask).logits
        ours = model.forward(ids, attention_mask=mask)
    assert (ours[0, :6] - ref[0, :6]).abs().max() <= 1e-4
    assert (ours[1] - ref[1]).abs().max() <= 1e-4


def _hf_greedy(hf, prompt, n):
    ids = torch.tensor([prompt])
    out = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                      pad_token_id=0, attention_mask=torch.ones_like(ids))
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_and_routing_match(tiny, arch):
    hf, d, _ = tiny[arch]
    model = load_model(d)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 96, (n,), generator=g).tolist() for n in (9, 3, 14)]
    out = model.generate(prompts, max_new_tokens=32, eos=False)
    solo = model.generate(prompts[:1], max_new_tokens=32, eos=False)
    assert solo.tokens[0] == out.tokens[0]  # batch 1 == the same prompt in a padded batch
    for p, toks, routing in zip(prompts, out.tokens, out.routing, strict=True):
        assert toks == _hf_greedy(hf, p, 32)
        full = torch.tensor([p + toks[:-1]])
        with torch.no_grad():
            router_logits = hf(full, output_router_logits=True).router_logits
        k = model.args.top_k
        expected = torch.stack([torch.softmax(r.float(), -1).topk(k, -1).indices for r in router_logits])
        assert routing.shape == (len(model.args.moe_layers), len(p) + 31, k)
        assert torch.equal(routing.long(), expected)
        assert len(set(routing.flatten().tolist())) > 2  # routing actually varies


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_loads_our_checkpoint(tiny, tmp_path, arch, layout):
    import transformers as tf

    hf, d, _ = tiny[arch]
    model = load_model(d)
    save_checkpoint(model, tmp_path / "ckpt", layout=layout)
    back = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    ids = torch.randint(1, 96, (2, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (back(ids).logits - hf(ids).logits).abs().max() <= 1e-5
    again = load_model(tmp_path / "ckpt")
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "qwen3_moe"])
def test_sequence_classification_matches_transformers(tmp_path, arch):
    hf = make_hf(arch, tmp_path / "cls", cls=True, seed=7)
    model = load_model(tmp_path / "cls")
    assert model.args.id2label == {0: "billing", 1: "technical", 2: "sales"}
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(1, 96, (n,), generator=g).tolist() for n in (5, 11, 8)]
    out = model.classify(prompts)
    T = 11
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)], mask[i, : len(p)] = torch.tensor(p), 1
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask).logits
    assert ref.abs().max() > 0.05
    assert (out.logits - ref).abs().max() <= 1e-4
    assert out.labels == [hf.config.id2label[int(i)] for i in ref.argmax(-1)]
    assert [r.shape[1] for r in out.routing] == [5, 11, 8]
    # the differentiable training path gives the same numbers
    assert (model.classify_logits(ids, mask) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("arch,over", [
    ("mixtral", {"sliding_window": 5}),
    ("qwen3_moe", {"use_sliding_window": True, "sliding_window": 6}),
    ("qwen3_moe", {"tie_word_embeddings": True}),
    ("olmoe", {"tie_word_embeddings": True, "norm_topk_prob": True}),
])
def test_config_variants_match_transformers(tmp_path, arch, over):
    hf = make_hf(arch, tmp_path / "v", seed=9, **over)
    model = load_model(tmp_path / "v")
    ids = torch.randint(1, 96, (2, 14), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = hf(ids).logits
        assert (model.forward(ids) - ref).abs().max() <= 1e-4
    prompt = ids[0, :9].tolist()
    assert model.generate([prompt, [3, 4]], max_new_tokens=12, eos=False).tokens[0] == _hf_greedy(hf, prompt, 12)
