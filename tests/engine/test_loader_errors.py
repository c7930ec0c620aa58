"""Every bad-checkpoint case fails with a CheckpointError naming the file and tensor/field."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from moe_engine import CheckpointError, build_model, load_model, save_checkpoint
from tests.engine.test_generation import CFG


@pytest.fixture
def ckpt(tmp_path):
    d = tmp_path / "ok"
    save_checkpoint(build_model(CFG, seed=0), d)
    return d


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(d, fn):
    sd = load_file(str(d / "model.safetensors"))
    fn(sd)
    save_file(sd, str(d / "model.safetensors"))


def test_ok(ckpt):
    assert load_model(ckpt).args.arch == "olmoe"


def test_unknown_architecture(ckpt):
    _edit_config(ckpt, architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3")
    with pytest.raises(CheckpointError, match=r"config\.json: unknown architecture.*DeepseekV3ForCausalLM"):
        load_model(ckpt)


@pytest.mark.parametrize("field,value,match", [
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope type 'yarn'"),
    ("hidden_act", "gelu", "hidden_act='gelu'"),
    ("classifier_pooling", "max", "classifier_pooling='max'"),
    ("num_hidden_layers", None, "'num_hidden_layers' is missing"),
])
def test_unsupported_or_missing_config_field(ckpt, field, value, match):
    _edit_config(ckpt, **{field: value})
    with pytest.raises(CheckpointError, match=match) as e:
        load_model(ckpt)
    assert "config.json" in str(e.value)


def test_missing_tensor(ckpt):
    _edit_tensors(ckpt, lambda sd: sd.pop("model.layers.1.self_attn.k_norm.weight"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing tensor model\.layers\.1\.self_attn\.k_norm"):
        load_model(ckpt)


def test_missing_expert(ckpt):
    _edit_tensors(ckpt, lambda sd: sd.pop("model.layers.0.mlp.experts.3.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor model\.layers\.0\.mlp\.experts\.3\.up_proj\.weight"):
        load_model(ckpt)


def test_no_experts_at_all(ckpt):
    _edit_tensors(ckpt, lambda sd: [sd.pop(k) for k in list(sd) if "layers.1.mlp.experts" in k])
    with pytest.raises(CheckpointError, match=r"missing tensor model\.layers\.1\.mlp\.experts\.0\.gate_proj"):
        load_model(ckpt)


def test_misshaped_tensor(ckpt):
    def bad(sd):
        sd["model.layers.0.mlp.gate.weight"] = torch.zeros(5, 32)
    _edit_tensors(ckpt, bad)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor model\.layers\.0\.mlp\.gate\.weight has "
                                              r"shape \[5, 32\], expected \[4, 32\]"):
        load_model(ckpt)


def test_misshaped_fused_experts(tmp_path):
    d = save_checkpoint(build_model(CFG, seed=0), tmp_path / "f", layout="fused")
    _edit_tensors(d, lambda sd: sd.__setitem__("model.layers.1.mlp.experts.down_proj", torch.zeros(4, 32, 31)))
    with pytest.raises(CheckpointError, match=r"experts\.down_proj has shape \[4, 32, 31\]"):
        load_model(d)


def test_unexpected_tensor(ckpt):
    _edit_tensors(ckpt, lambda sd: sd.__setitem__("model.layers.0.self_attn.q_proj.bias", torch.zeros(32)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor model\.layers\.0\.self_attn\.q_proj\.bias"):
        load_model(ckpt)


def test_missing_files(ckpt, tmp_path):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_model(tmp_path / "nowhere")


def test_corrupt_safetensors(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_model(ckpt)


def test_sharded_checkpoint(ckpt, tmp_path):
    """model.safetensors.index.json with two shards loads; a missing shard is named."""
    sd = load_file(str(ckpt / "model.safetensors"))
    d = tmp_path / "sharded"
    d.mkdir()
    shutil.copy(ckpt / "config.json", d / "config.json")
    keys = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(d / name))
        weight_map.update(dict.fromkeys(ks, name))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(load_model(d).forward(ids), load_model(ckpt).forward(ids))
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors which does not exist"):
        load_model(d)


def test_bad_dtype(ckpt):
    with pytest.raises(ValueError, match="dtype"):
        load_model(ckpt, dtype=torch.int8)
