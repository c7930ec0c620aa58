"""MOEDESK_COMPILE and the worker's model warm-up (support_agents.inference, support_agents.tasks)."""
from __future__ import annotations

import logging

import pytest

from support_agents import inference


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(inference, "_models", {})
    monkeypatch.setattr(inference, "_engines", {})
    monkeypatch.setenv("MOEDESK_DEVICE", "cpu")


@pytest.mark.parametrize(("setting", "compiled"), [("0", False), ("1", True), ("auto", True)])
def test_compile_setting_decides_the_decode_step(tiny_ckpts, fresh_cache, monkeypatch, setting, compiled):
    monkeypatch.setenv("MOEDESK_COMPILE", setting)
    model = inference.get_model(tiny_ckpts["agent"])
    assert (model._compiled_decode is not None) is compiled


def test_bad_compile_setting_is_refused_by_name(tiny_ckpts, fresh_cache, monkeypatch):
    monkeypatch.setenv("MOEDESK_COMPILE", "yes")
    with pytest.raises(ValueError, match="MOEDESK_COMPILE must be auto, 0 or 1, got 'yes'"):
        inference.get_model(tiny_ckpts["agent"])


def test_worker_warm_up_compiles_both_decode_graphs(model_env, fresh_cache, monkeypatch, caplog):
    from support_agents.tasks import warm_models

    monkeypatch.setenv("MOEDESK_COMPILE", "1")
    with caplog.at_level(logging.WARNING):
        warm_models()
    agent = inference.get_model(model_env["agent"])
    assert agent._compiled_decode is not None, "the compiled step fell back to eager"
    assert not [r for r in caplog.records if r.name in ("moe_engine.model", "moedesk.tasks")]
    # batch 1 and batch 2 each left a compiled graph: the engine's later steps compile nothing
    import torch._dynamo

    engine = inference.get_generator(model_env["agent"])
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    ids = agent.tokenizer.encode("hello there, my card is blocked")
    try:
        engine.generate([ids], max_new_tokens=6)
        engine.generate([ids, ids[:3], ids[2:]], max_new_tokens=6)
    finally:
        engine.close()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == before
