"""Sampling, stops, validation, training path, build/save round trip (no transformers needed here)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from moe_engine import build_model, load_model, save_checkpoint
from tests.engine.conftest import CFG


def test_sampling_is_seeded_and_batch_independent(model):
    prompts = [[1, 2, 3], [7, 8, 9, 10, 11]]
    a = model.generate(prompts, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=11, eos=False)
    b = model.generate(prompts, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=11, eos=False)
    assert a.tokens == b.tokens
    # prompt 1 alone with its own seed (seed + index) samples the same tokens as inside the batch
    solo = model.generate(prompts[1:], max_new_tokens=16, temperature=1.0, top_p=0.9, seed=12, eos=False)
    assert solo.tokens[0] == a.tokens[1]
    c = model.generate(prompts, max_new_tokens=16, temperature=1.0, seed=99, eos=False)
    assert c.tokens != a.tokens
    greedy = model.generate(prompts, max_new_tokens=16, eos=False)
    assert greedy.tokens != a.tokens


def test_top_p_tiny_is_greedy(model):
    p = [[4, 9, 2, 33]]
    greedy = model.generate(p, max_new_tokens=12, eos=False).tokens
    assert model.generate(p, max_new_tokens=12, temperature=0.7, top_p=1e-6, seed=3, eos=False).tokens == greedy


def test_stop_token_ids_and_eos(model):
    p = [[4, 9, 2, 33]]
    full = model.generate(p, max_new_tokens=20, eos=False)
    assert full.finish_reasons == ["length"] and len(full.tokens[0]) == 20
    stop_at = full.tokens[0][5]
    first = full.tokens[0].index(stop_at)
    out = model.generate(p, max_new_tokens=20, stop=[stop_at], eos=False)
    assert out.tokens[0] == full.tokens[0][: first + 1]
    assert out.finish_reasons == ["stop"]
    assert out.routing[0].shape[1] == len(p[0]) + first  # every fed token, the last one is never fed
    assert out.usage[0].completion_tokens == first + 1 and out.usage[0].prompt_tokens == 4


def test_mixed_finish_in_one_batch_and_refill(model):
    prompts = [[1, 2], [3, 4, 5, 6, 7, 8], [9], [10, 11, 12]]
    ref = [model.generate([p], max_new_tokens=n, eos=False).tokens[0] for p, n in zip(prompts, (3, 9, 1, 6), strict=True)]
    assert [len(r) for r in ref] == [3, 9, 1, 6]
    # a queue longer than the batch: rows are refilled as requests finish
    out = model.generate(prompts, max_new_tokens=9, eos=False, max_batch=2)
    assert [t[:len(r)] for t, r in zip(out.tokens, ref, strict=True)] == ref


def test_zero_new_tokens_and_bad_input(model):
    out = model.generate([[1, 2, 3]], max_new_tokens=0)
    assert out.tokens == [[]] and out.routing[0].shape == (2, 3, 2)
    with pytest.raises(ValueError, match="empty"):
        model.generate([[]])
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        model.generate([[1, 64]])
    with pytest.raises(ValueError, match="temperature"):
        model.generate([[1]], temperature=-1)
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate(["text without tokenizer"])
    with pytest.raises(ValueError, match="token-id lists"):
        model.generate([1, 2, 3])


def test_forward_is_differentiable_and_returns_router_logits(model):
    m = build_model(CFG, seed=1)
    m.train()
    ids = torch.randint(0, 64, (2, 7))
    logits, router_logits = m.forward(ids, return_router_logits=True)
    assert logits.shape == (2, 7, 64)
    assert len(router_logits) == 2 and router_logits[0].shape == (14, 4)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), ids[:, 1:].reshape(-1))
    loss = loss + 0.01 * sum(torch.softmax(r, -1).pow(2).sum() for r in router_logits)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    hidden = m.forward(ids, return_hidden=True)
    assert hidden.shape == (2, 7, 32)


def test_left_padding_equals_unpadded(model):
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        padded = model.forward(ids, attention_mask=mask)
        alone = model.forward(ids[:1, 2:])
    assert (padded[0, 2:] - alone[0]).abs().max() < 1e-5


def test_build_save_load_round_trip(tmp_path, model):
    save_checkpoint(model, tmp_path / "m", layout="fused")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["architectures"] == ["OlmoeForCausalLM"]
    again = load_model(tmp_path / "m")
    ids = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        assert torch.equal(again.forward(ids), model.forward(ids))


def test_classification_mean_pooling(tmp_path):
    cfg = dict(CFG, architectures=["OlmoeForSequenceClassification"], classifier_pooling="mean",
               id2label={"0": "a", "1": "b"})
    m = build_model(cfg, seed=2)
    prompts = [[3, 4, 5], [6, 7, 8, 9, 10, 11]]
    out = m.classify(prompts)
    with torch.no_grad():
        for i, p in enumerate(prompts):
            h = m.forward(torch.tensor([p]), return_hidden=True)
            assert (out.logits[i] - m.score(h.mean(1))[0]).abs().max() < 1e-5
    assert out.labels[0] in ("a", "b") and out.usage[0].prompt_tokens == 3
    # chunked and length-sorted internally, returned in the caller's order
    many = [[1 + (i * 7 + j) % 60 for j in range(1 + i % 9)] for i in range(11)]
    whole = m.classify(many, batch_size=64)
    chunked = m.classify(many, batch_size=3)
    assert (whole.logits - chunked.logits).abs().max() < 1e-5
    assert [r.shape[1] for r in chunked.routing] == [len(p) for p in many]
    assert chunked.labels == whole.labels
    save_checkpoint(m, tmp_path / "c")
    assert load_model(tmp_path / "c").args.classifier_pooling == "mean"


def test_classification_in_forked_processes_matches_one_process(monkeypatch):
    import moe_engine.parallel as parallel

    cfg = dict(CFG, architectures=["OlmoeForSequenceClassification"], id2label={"0": "a", "1": "b", "2": "c"})
    m = build_model(cfg, seed=3)
    many = [[1 + (i * 11 + j) % 60 for j in range(1 + (i * 5) % 13)] for i in range(40)]
    one = m.classify(many, batch_size=4)
    counts = m.telemetry.matrix()
    m.telemetry.reset()
    calls = []
    real = parallel.classify_in_processes
    monkeypatch.setattr(parallel, "classify_in_processes", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    forked = m.classify(many, batch_size=4, processes=3)
    assert [c["processes"] for c in calls] == [3]
    assert (forked.logits - one.logits).abs().max() < 1e-5
    assert forked.labels == one.labels  # in the caller's order
    assert all(torch.equal(a, b) for a, b in zip(forked.routing, one.routing, strict=True))
    assert [u.prompt_tokens for u in forked.usage] == [len(p) for p in many]
    assert torch.equal(m.telemetry.matrix(), counts)  # the children's routing counts came back
    # too few prompts to be worth a fork: classified here
    assert (m.classify(many[:5], processes=3).logits - one.logits[:5]).abs().max() < 1e-5
    assert len(calls) == 1
    with pytest.raises(ValueError, match="processes must be >= 1"):
        m.classify(many, processes=0)


def _killed(*_args):
    os._exit(9)  # what the OOM killer leaves: no exception, no result


def test_a_killed_classify_process_is_an_error_not_a_hang(monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    import moe_engine.parallel as parallel

    cfg = dict(CFG, architectures=["OlmoeForSequenceClassification"], id2label={"0": "a", "1": "b"})
    m = build_model(cfg, seed=4)
    monkeypatch.setattr(parallel, "_classify_shard", _killed)
    with pytest.raises(BrokenProcessPool):
        m.classify([[1, 2, 3]] * 40, batch_size=4, processes=2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs(tmp_path, model, dtype):
    save_checkpoint(model, tmp_path / "h")
    m = load_model(tmp_path / "h", dtype=dtype)
    assert m.embed_tokens.weight.dtype == dtype
    out = m.generate([[1, 2, 3, 4]], max_new_tokens=4, eos=False)
    assert len(out.tokens[0]) == 4
    with torch.no_grad():
        full = model.forward(torch.tensor([[1, 2, 3, 4]]))
        half = m.forward(torch.tensor([[1, 2, 3, 4]])).float()
    assert (full - half).abs().max() < 0.1 * full.abs().max()
