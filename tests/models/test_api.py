"""extract_arguments / write_reply run through a real (tiny, untrained) engine model end to end."""
import pytest
import torch

from moe_engine import build_model
from moe_engine.tokenizer import Tokenizer
from moe_engine.tokenizer_train import save, train_tokenizer
from support_agents.language import ModelCall, extract_arguments, faithfulness_problems, write_reply
from support_agents.language.fields import grounded, normalize
from support_agents.language.prompts import SPECIAL_TOKENS

CORPUS = ["I paid 23.50 GBP at Tesco on 3 March", '{"amount": "23.50", "merchant": null}', "Hi Alice, thanks."] * 5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    save(train_tokenizer(iter(CORPUS), 400, list(SPECIAL_TOKENS)), d, pad=SPECIAL_TOKENS[0], eos="<|end|>",
         max_length=512)
    tok = Tokenizer.from_dir(d)
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 32,
           "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
           "intermediate_size": 64, "moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2,
           "vocab_size": tok.vocab_size, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
           "max_position_embeddings": 1024}
    torch.set_num_threads(1)
    m = build_model(cfg, seed=3, std=0.5)  # large init: an untrained model that emits varied tokens
    m.tokenizer = tok
    return m


def test_extracted_values_are_always_grounded_and_normalised(model):
    text = "I paid 23.50 GBP at Tesco on 3 March"
    trace: list[ModelCall] = []
    args = extract_arguments(model, intent="transaction_charged_twice", text=text,
                             fields=["amount", "merchant", "date", "card_last4"], trace=trace)
    assert set(args) == {"amount", "merchant", "date", "card_last4"}
    # whatever an untrained model says, only values present in the text survive, in canonical form
    assert args["amount"] in (None, "23.50")
    assert args["merchant"] is None or grounded("merchant", args["merchant"], text)
    assert args["date"] in (None, normalize("date", "3 March"))
    assert args["card_last4"] is None
    assert len(trace) == 1 and trace[0].task == "extract_arguments" and trace[0].usage is not None


def test_unknown_field_is_refused(model):
    with pytest.raises(ValueError, match="unknown fields"):
        extract_arguments(model, intent="x", text="y", fields=["password"])


def test_write_reply_reports_every_problem(model):
    facts = {"amount": "23.50 GBP", "date": "2026-03-03"}
    r = write_reply(model, customer_name="Alice Smith", intent="transaction_charged_twice", facts=facts,
                    message="charged twice")
    expected = faithfulness_problems(r.text, facts, customer_name="Alice Smith")
    assert set(expected) <= set(r.problems)
    assert r.faithful == (not r.problems)
    assert not any(t in r.text for t in SPECIAL_TOKENS) or "reply contains prompt markers" in r.problems


def test_sampled_reply_is_reproducible_by_seed_and_never_holds_nul(model):
    facts = {"amount": "23.50 GBP"}
    kw = dict(customer_name="Alice Smith", intent="transaction_charged_twice", facts=facts, message="charged twice",
              constrained=False, temperature=1.5)
    texts = [write_reply(model, seed=seed, **kw).text for seed in range(12)]
    assert texts[3] == write_reply(model, seed=3, **kw).text  # a redelivered task writes the same draft
    assert len(set(texts)) > 1
    # an untrained model samples any byte, NUL included; PostgreSQL cannot store it in text or jsonb
    assert not any("\x00" in t for t in texts)


def test_evaluate_reports_replies_kept_before_and_after_redrafts(model):
    from datetime import date

    from support_agents.language.evaluate import evaluate
    from support_agents.language.prompts import reply_prompt

    facts = {"amount": "23.50 GBP", "date": "2026-03-03"}
    examples = [{"task": "reply", "intent": "transaction_charged_twice", "customer_name": name, "facts": facts,
                 "text": "charged twice", "prompt": reply_prompt(name, "transaction_charged_twice", facts, "charged twice")}
                for name in ("Alice Smith", "Bo Li", "")]
    res = evaluate(model, examples, today=date(2026, 3, 10), redrafts=2)
    assert 0 <= res["reply_kept_by_pipeline"] <= res["reply_kept_after_2_redrafts"] <= 1
    assert "reply_kept_after_2_redrafts" not in evaluate(model, examples, today=date(2026, 3, 10))


def test_evaluate_reports_each_fields_accuracy_and_where_the_text_has_a_value(model):
    from datetime import date

    from support_agents.language.evaluate import evaluate
    from support_agents.language.prompts import extract_prompt

    def example(text: str, expected: dict) -> dict:
        fields = list(expected)
        return {"task": "extract", "intent": "failed_transfer", "text": text, "fields": fields,
                "prompt": extract_prompt("failed_transfer", text, fields), "expected": expected}

    examples = [example("I sent 12.00 to Kaleno Bar and it failed.", {"amount": "12.00", "recipient": "Kaleno Bar"}),
                example("My transfer failed.", {"amount": None, "recipient": None}),
                example("Sending 5.00 failed.", {"amount": "5.00"})]
    res = evaluate(model, examples, today=date(2026, 3, 10))
    by_field = res["extraction_by_field"]
    assert {f: (r["n"], r["n_with_value"]) for f, r in by_field.items()} == {"amount": (3, 2), "recipient": (2, 1)}
    right = sum(r["accuracy"] * r["n"] for r in by_field.values())
    assert abs(right / 5 - res["extraction_field_accuracy"]) < 1e-9
