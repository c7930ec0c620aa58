"""Train the byte-level BPE tokenizer the default models share (``tokenizers`` library).

    python -m moe_engine.tokenizer_train --out checkpoints/tokenizer --vocab-size 4096 \\
        --banking77 --ood --input var/agent_data/train.jsonl --special "<|pad|>" "<|end|>" ...

Inputs: text files (one example per line) or JSONL files (their prompt + completion fields), plus
the Banking77 train part (never the validation split) and our out-of-domain training text.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def corpus(inputs: list[Path], banking77: bool, ood: bool) -> Iterator[str]:
    if banking77 or ood:
        from .data.banking77 import load_splits, ood_texts

        if banking77:
            yield from (t for t, _ in load_splits()[0])
        if ood:
            yield from ood_texts("train")
    for p in inputs:
        with open(p, encoding="utf-8") as f:
            for line in f:
                if p.suffix == ".jsonl":
                    ex = json.loads(line)
                    yield ex.get("prompt", "") + ex.get("completion", "")
                elif line.strip():
                    yield line.rstrip("\n")


def train_tokenizer(texts: Iterator[str], vocab_size: int, special: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def save(tok: Tokenizer, out: Path, *, pad: str, eos: str, max_length: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "eos_token": eos,
           "model_max_length": max_length, "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="train the shared byte-level BPE tokenizer")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--input", type=Path, nargs="*", default=[])
    ap.add_argument("--banking77", action="store_true", help="include the Banking77 train part")
    ap.add_argument("--ood", action="store_true", help="include the out-of-domain training text")
    ap.add_argument("--special", nargs="*", default=["<|pad|>", "<|end|>"], help="first is pad, second eos")
    ap.add_argument("--max-length", type=int, default=256)
    a = ap.parse_args(argv)
    tok = train_tokenizer(corpus(a.input, a.banking77, a.ood), a.vocab_size, a.special)
    save(tok, a.out, pad=a.special[0], eos=a.special[1], max_length=a.max_length)
    print(f"wrote {a.out}/tokenizer.json: {tok.get_vocab_size()} tokens")


if __name__ == "__main__":
    main()
