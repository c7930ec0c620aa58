"""Tiny random checkpoints for tests whose outcome does not depend on the model's judgement.

With random weights the agent model's extraction is dropped by the grounding check and its replies
fail the faithfulness check, so runs take the deterministic template path: exactly what tests of the
state machine, tools and permissions want. Tests that need correct routing use the shipped router.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from support_agents.language.prompts import SPECIAL_TOKENS

ROOT = Path(__file__).resolve().parents[2]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [*SPECIAL_TOKENS, "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    with open(ROOT / "data" / "banking77" / "train.csv") as f:
        texts = [r["text"] for _, r in zip(range(800), csv.DictReader(f), strict=False)]
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path / "tokenizer.json"))


def _config(arch: str, vocab: int, **extra) -> dict:
    return {"architectures": [arch], "model_type": "qwen3_moe", "vocab_size": vocab, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "intermediate_size": 48, "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True, "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "pad_token_id": 0, "initializer_range": 0.05,
            "tie_word_embeddings": False, **extra}


def make_tiny_checkpoints(root: Path, *, seed: int = 0) -> dict[str, Path]:
    """router/ (77 intents + out_of_domain), agent/ (causal LM), chat/ (causal LM + chat template)."""
    from moe_engine import build_model, save_checkpoint

    queues = json.loads((ROOT / "data" / "banking77" / "queues.json").read_text())
    labels = sorted(queues) + ["out_of_domain"]
    out = {}
    for name in ("router", "agent", "chat"):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        _tokenizer(d)
        vocab = json.loads((d / "tokenizer.json").read_text())["model"]["vocab"]
        if name == "router":
            cfg = _config("Qwen3MoeForSequenceClassification", len(vocab), num_labels=len(labels),
                          id2label={str(i): v for i, v in enumerate(labels)},
                          label2id={v: i for i, v in enumerate(labels)},
                          moedesk={"temperature": 1.0, "human_threshold": 0.0})
        else:
            cfg = _config("Qwen3MoeForCausalLM", len(vocab), max_position_embeddings=4096 if name == "chat" else 512)
        save_checkpoint(build_model(cfg, seed=seed), d)
        tcfg = {"pad_token": "<|pad|>", "eos_token": "<|end|>"}
        if name == "chat":
            tcfg["chat_template"] = CHAT_TEMPLATE
        (d / "tokenizer_config.json").write_text(json.dumps(tcfg))
        out[name] = d
    return out
