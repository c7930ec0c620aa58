"""tokenizer.json + chat template from tokenizer_config.json; text prompts and stop strings."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from moe_engine import build_model, load_model, save_checkpoint
from tests.engine.test_generation import CFG

WORDS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "\n"] + [f"w{i}" for i in range(58)]


@pytest.fixture
def ckpt(tmp_path):
    d = save_checkpoint(build_model(dict(CFG, eos_token_id=2), seed=4), tmp_path / "t")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import AddedToken, decoders
    tok.add_special_tokens([AddedToken(w, special=True) for w in WORDS[:5]])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.save(str(d / "tokenizer.json"))
    template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "</s>", "pad_token": "<pad>", "chat_template": template}))
    return d


def test_encode_decode_and_chat_template(ckpt):
    m = load_model(ckpt)
    tok = m.tokenizer
    assert tok.encode("w1 w2 w3") == [7, 8, 9]
    assert tok.decode([7, 8, 2]) == "w1 w2"
    assert tok.eos_token_id == 2 and tok.pad_token_id == 0
    ids = tok.apply_chat_template([{"role": "user", "content": "w5 w6"}])
    assert ids == [3, 11, 12, 4]
    assert tok.apply_chat_template([{"role": "user", "content": "w5"}], tokenize=False) == "<|user|> w5 <|assistant|>"


def test_text_prompts_and_stop_strings(ckpt):
    m = load_model(ckpt)
    full = m.generate("w1 w2 w3", max_new_tokens=12, eos=False)
    assert len(full.tokens[0]) == 12 and full.texts[0] == m.tokenizer.decode(full.tokens[0])
    target = full.texts[0].split()[3]  # a word that appears in the continuation
    out = m.generate(["w1 w2 w3"], max_new_tokens=12, stop=[target], eos=False)
    assert out.finish_reasons == ["stop"]
    assert target not in out.texts[0] and full.texts[0].startswith(out.texts[0].rstrip())


def test_cli_generate(ckpt, capsys):
    from moe_engine.__main__ import main

    assert main(["generate", "--model", str(ckpt), "--max-new-tokens", "5", "w1 w2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() and '"completion_tokens"' in captured.err
    assert main(["bench", "--model", str(ckpt), "--batch", "2", "--prompt-len", "4", "--new-tokens", "3"]) == 0
    assert "decode_tok_s" in capsys.readouterr().out
    assert main(["generate", "--model", str(ckpt / "missing"), "x"]) == 2
