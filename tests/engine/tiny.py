"""Tiny random checkpoints of the four architectures, written by transformers' save_pretrained."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

COMMON = dict(vocab_size=96, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=48, max_position_embeddings=256, initializer_range=0.15, pad_token_id=0,
              eos_token_id=None, bos_token_id=None)
ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]


def hf_config(arch: str, **over):
    import transformers as tf

    if arch == "mixtral":
        cfg = tf.MixtralConfig(**COMMON, num_local_experts=6, num_experts_per_tok=2, rope_theta=1e4)
    elif arch == "qwen2_moe":
        cfg = tf.Qwen2MoeConfig(**COMMON, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=16,
                                shared_expert_intermediate_size=40, mlp_only_layers=[1], norm_topk_prob=False)
    elif arch == "qwen3_moe":
        cfg = tf.Qwen3MoeConfig(**COMMON, num_experts=8, num_experts_per_tok=3, moe_intermediate_size=16,
                                decoder_sparse_step=1, mlp_only_layers=[2], norm_topk_prob=True, head_dim=12)
    else:
        cfg = tf.OlmoeConfig(**COMMON, num_experts=6, num_experts_per_tok=2, clip_qkv=4.0)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def make_hf(arch: str, path: Path, cls: bool = False, seed: int = 0, **over):
    import transformers as tf

    torch.manual_seed(seed)
    cfg = hf_config(arch, **over)
    if cls:
        cfg.num_labels = 3
        cfg.id2label = {0: "billing", 1: "technical", 2: "sales"}
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
        model = tf.AutoModelForSequenceClassification.from_config(cfg)
    else:
        model = tf.AutoModelForCausalLM.from_config(cfg)
    model.eval()
    model.save_pretrained(path)
    return model


def to_fused(src: Path, dst: Path) -> Path:
    """Rewrite a per-expert checkpoint into the fused 3-D expert layout (and Mixtral's mlp prefix)."""
    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    sd = load_file(str(src / "model.safetensors"))
    out, groups = {}, {}
    names = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}
    for k, v in sd.items():
        parts = k.split(".")
        if ".experts." in k and parts[parts.index("experts") + 1].isdigit():
            i = parts.index("experts")
            prefix = ".".join(parts[:i]).replace("block_sparse_moe", "mlp")
            groups.setdefault(prefix, {}).setdefault(names[parts[i + 2]], {})[int(parts[i + 1])] = v
        else:
            out[k.replace("block_sparse_moe", "mlp")] = v
    for prefix, g in groups.items():
        n = len(g["gate"])
        out[f"{prefix}.experts.gate_up_proj"] = torch.stack(
            [torch.cat([g["gate"][e], g["up"][e]]) for e in range(n)]).contiguous()
        out[f"{prefix}.experts.down_proj"] = torch.stack([g["down"][e] for e in range(n)]).contiguous()
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


