"""ModelArgs: the few numbers the engine needs, parsed strictly from a Hugging Face config.json."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint we cannot run faithfully: names the file (and tensor or field) at fault."""


ARCHS = {
    "MixtralForCausalLM": ("mixtral", "lm"),
    "Qwen2MoeForCausalLM": ("qwen2_moe", "lm"),
    "Qwen3MoeForCausalLM": ("qwen3_moe", "lm"),
    "OlmoeForCausalLM": ("olmoe", "lm"),
    "MixtralForSequenceClassification": ("mixtral", "cls"),
    "Qwen2MoeForSequenceClassification": ("qwen2_moe", "cls"),
    "Qwen3MoeForSequenceClassification": ("qwen3_moe", "cls"),
    "OlmoeForSequenceClassification": ("olmoe", "cls"),
}
MODEL_TYPES = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe"}


@dataclass
class ModelArgs:
    arch: str  # mixtral | qwen2_moe | qwen3_moe | olmoe
    task: str  # lm | cls
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP layers (and Mixtral/OLMoE experts)
    moe_intermediate_size: int
    num_experts: int
    top_k: int
    norm_topk_prob: bool
    shared_expert_intermediate_size: int = 0  # 0: no shared expert
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: str | None = None  # None | "head" (Qwen3) | "full" (OLMoE)
    clip_qkv: float | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    sparse_layers: list[bool] = field(default_factory=list)
    num_labels: int = 0
    id2label: dict[int, str] = field(default_factory=dict)
    pad_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    classifier_pooling: str = "last"  # last (HF-compatible) | mean
    hf: dict[str, Any] = field(default_factory=dict, repr=False)  # the raw config.json, for saving

    @property
    def moe_layers(self) -> list[int]:
        return [i for i, s in enumerate(self.sparse_layers) if s]

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], source: str = "config.json") -> ModelArgs:
        def need(key: str, *alts: str) -> Any:
            for k in (key, *alts):
                if cfg.get(k) is not None:
                    return cfg[k]
            raise CheckpointError(f"{source}: required field {key!r} is missing")

        archs = cfg.get("architectures") or []
        if len(archs) != 1 or archs[0] not in ARCHS:
            mt = cfg.get("model_type")
            if not archs and mt in MODEL_TYPES:
                arch, task = mt, "lm"
            else:
                raise CheckpointError(
                    f"{source}: unknown architecture {archs or mt!r}; supported: {sorted(ARCHS)}"
                )
        else:
            arch, task = ARCHS[archs[0]]
        if cfg.get("model_type", arch) != arch:
            raise CheckpointError(f"{source}: model_type {cfg.get('model_type')!r} does not match {archs[0]}")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise CheckpointError(f"{source}: unsupported field hidden_act={act!r} (only 'silu')")

        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise CheckpointError(f"{source}: unsupported field rope type {rope_type!r} (only 'default')")
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))

        n_layers, hidden, n_heads = need("num_hidden_layers"), need("hidden_size"), need("num_attention_heads")
        n_kv = cfg.get("num_key_value_heads") or n_heads
        head_dim = cfg.get("head_dim") or hidden // n_heads
        if n_heads % n_kv:
            raise CheckpointError(f"{source}: num_attention_heads={n_heads} not a multiple of kv heads={n_kv}")
        num_experts = need("num_experts", "num_local_experts")
        top_k = need("num_experts_per_tok")
        inter = need("intermediate_size")
        shared = 0
        qkv_bias = o_bias = False
        qk_norm = None
        sparse = [True] * n_layers
        sliding = cfg.get("sliding_window")
        if arch == "mixtral":
            moe_inter, norm_topk = inter, True
        else:  # only the Qwen MoEs have a separate expert width; OLMoE experts use intermediate_size
            moe_inter = (cfg.get("moe_intermediate_size") or inter) if arch.startswith("qwen") else inter
            norm_topk = bool(cfg.get("norm_topk_prob", False))
        if arch in ("qwen2_moe", "qwen3_moe"):
            step = cfg.get("decoder_sparse_step", 1) or 1
            mlp_only = set(cfg.get("mlp_only_layers") or [])
            sparse = [i not in mlp_only and num_experts > 0 and (i + 1) % step == 0 for i in range(n_layers)]
            if not cfg.get("use_sliding_window", False):
                sliding = None
            elif arch == "qwen2_moe":
                raise CheckpointError(f"{source}: unsupported field use_sliding_window=true for qwen2_moe")
        if arch == "qwen2_moe":
            shared = cfg.get("shared_expert_intermediate_size") or 0
            qkv_bias = bool(cfg.get("qkv_bias", True))
        if arch == "qwen3_moe":
            qk_norm = "head"
            qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
        if arch == "olmoe":
            qk_norm = "full"
            qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
            if head_dim != hidden // n_heads:
                raise CheckpointError(f"{source}: unsupported field head_dim={head_dim} for olmoe")
        if sliding is not None and sliding <= 0:
            sliding = None

        eos = cfg.get("eos_token_id")
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        vocab = need("vocab_size")
        id2label = {int(k): v for k, v in (cfg.get("id2label") or {}).items()}
        num_labels = (cfg.get("num_labels") or len(id2label)) if task == "cls" else 0
        if task == "cls" and not num_labels:
            raise CheckpointError(f"{source}: sequence classification config needs id2label / num_labels")
        pooling = cfg.get("classifier_pooling", "last")
        if pooling not in ("last", "mean"):
            raise CheckpointError(f"{source}: unsupported field classifier_pooling={pooling!r} (last | mean)")
        return cls(
            arch=arch, task=task, vocab_size=vocab, hidden_size=hidden, n_layers=n_layers,
            n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, intermediate_size=inter,
            moe_intermediate_size=moe_inter, num_experts=num_experts, top_k=top_k,
            norm_topk_prob=norm_topk, shared_expert_intermediate_size=shared, qkv_bias=qkv_bias,
            o_bias=o_bias, qk_norm=qk_norm, clip_qkv=cfg.get("clip_qkv"),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6), rope_theta=float(theta),
            max_position_embeddings=cfg.get("max_position_embeddings", 4096), sliding_window=sliding,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), sparse_layers=sparse,
            num_labels=num_labels, id2label=id2label, pad_token_id=cfg.get("pad_token_id"),
            eos_token_ids=[e for e in eos_ids if 0 <= e < vocab], classifier_pooling=pooling, hf=dict(cfg),
        )
