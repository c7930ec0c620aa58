"""Training code: the balancing loss, a tiny run lowers the loss, same seed -> same weights."""
import math
import random
import re
from pathlib import Path

import pytest
import torch

from moe_engine import build_model, save_checkpoint
from moe_engine.data.router import decide
from moe_engine.tokenizer import Tokenizer
from moe_engine.tokenizer_train import save, train_tokenizer
from moe_engine.train import (
    Dataset,
    Example,
    aux_loss,
    balancedness,
    collate,
    expert_counts,
    predict,
    train,
    update_balance_coefs,
)

TEXTS = [
    "my card has not arrived yet", "how do I change my pin", "I was charged twice for one payment",
    "cancel my transfer please", "what is the weather in paris", "tell me a joke about cats",
    "my top up failed again", "which currencies can I hold", "the atm swallowed my card",
    "why was I charged a fee for cash", "write a poem about the sea", "how long does delivery take",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    save(train_tokenizer(iter(TEXTS * 3), 300, ["<|pad|>", "<|end|>", "<|out|>"]), d, pad="<|pad|>", eos="<|end|>",
         max_length=64)
    return Tokenizer.from_dir(d)


def tiny_config(task: str, vocab: int, labels: int = 4) -> dict:
    arch = "Qwen3MoeForSequenceClassification" if task == "classify" else "Qwen3MoeForCausalLM"
    cfg = {
        "architectures": [arch], "model_type": "qwen3_moe", "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 64,
        "moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True,
        "vocab_size": vocab, "pad_token_id": 0, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
    }
    if task == "classify":
        cfg.update(num_labels=labels, id2label={str(i): f"l{i}" for i in range(labels)}, classifier_pooling="mean")
    return cfg


TCFG = {"epochs": 30, "batch_size": 8, "lr": 1e-2, "min_lr_ratio": 0.1, "weight_decay": 0.0, "warmup_steps": 3,
        "grad_clip": 1.0, "aux_loss_coef": 0.01, "label_smoothing": 0.0, "word_dropout": 0.0, "max_len": 32}


def cls_data(tok) -> Dataset:
    ex = [Example(tok.encode(t), i % 4, text=t) for i, t in enumerate(TEXTS)]
    return Dataset(ex, ex)


def lm_data(tok) -> Dataset:
    ex = []
    for t in TEXTS:
        p, c = tok.encode(t + "<|out|>"), tok.encode(t.upper()[:12] + "<|end|>")
        ex.append(Example(p + c, loss_from=len(p) - 1))
    return Dataset(ex, ex)


def mean_loss(model, data, task, tok) -> float:
    if task == "lm":
        return predict(model, data.val, "lm", tok.pad_token_id, 32)[2]
    logits, _, _ = predict(model, data.val, "classify", tok.pad_token_id, 32)
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor([e.label for e in data.val])))


@pytest.mark.parametrize("task", ["classify", "lm"])
def test_tiny_training_run_lowers_the_loss(tok, task):
    torch.set_num_threads(1)
    data = cls_data(tok) if task == "classify" else lm_data(tok)
    model = build_model(tiny_config(task, tok.vocab_size), seed=0)
    before = mean_loss(model, data, task, tok)
    info = train(model, data, task, dict(TCFG, epochs=15), seed=0, pad_id=tok.pad_token_id, progress=False)
    after = mean_loss(model, data, task, tok)
    assert info["steps"] == 15 * 2
    assert after < 0.5 * before, (before, after)


def weights_after(tok, seed: int, steps: int = 4) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    model = build_model(tiny_config("classify", tok.vocab_size), seed=seed)
    cfg = dict(TCFG, word_dropout=0.2)
    train(model, cls_data(tok), "classify", cfg, seed=seed, pad_id=tok.pad_token_id, tok=tok, progress=False,
          max_steps=steps)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_same_seed_gives_the_same_weights(tok):
    a, b, c = weights_after(tok, 1), weights_after(tok, 1), weights_after(tok, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_aux_loss_is_one_when_balanced_and_higher_when_collapsed():
    balanced = torch.zeros(8, 4)  # equal logits: uniform probabilities, ties spread by topk
    collapsed = torch.tensor([[9.0, 8.0, 0.0, 0.0]]).repeat(8, 1)
    assert aux_loss([balanced], 2, None).item() == pytest.approx(1.0)
    assert aux_loss([collapsed], 2, None).item() > 1.9
    counts = expert_counts([collapsed], 2, None)
    assert counts.tolist() == [[8.0, 8.0, 0.0, 0.0]]
    assert balancedness(counts) == [pytest.approx(0.5)]


def test_balance_controller_raises_the_weight_of_unbalanced_layers_only():
    cfg = {"aux_loss_coef": 0.01, "balance_target": 0.8, "balance_gain": math.log(2), "balance_max_factor": 4.0}
    coefs = [0.01, 0.01, 0.04]
    coefs = update_balance_coefs(coefs, [0.5, 0.9, 0.6], cfg)
    assert coefs == pytest.approx([0.02, 0.01, 0.04])  # doubled; floored at the base; capped at 4x
    assert update_balance_coefs(coefs, [0.95, 0.95, 0.95], cfg) == pytest.approx([0.01, 0.01, 0.02])


def collapsed_router_model(tok):
    """A classifier whose only MoE layer sends every token to experts 0 and 1 (balancedness 0.5)."""
    model = build_model(tiny_config("classify", tok.vocab_size), seed=0)
    with torch.no_grad():
        shared = torch.zeros(model.args.hidden_size)
        shared[0] = 1.0
        model.embed_tokens.weight.add_(3.0 * shared)  # every hidden state leans the same way
        gate = model.layers[0].mlp.gate.weight
        gate.zero_()
        gate[:2], gate[2:] = 0.5 * shared, -0.5 * shared
    return model


def test_balance_control_spreads_a_collapsed_layer(tok):
    torch.set_num_threads(1)
    data = cls_data(tok)
    balance = {}
    for target in (0.0, 0.9):
        model = collapsed_router_model(tok)
        assert balancedness(predict(model, data.val, "classify", tok.pad_token_id, 32)[1]) == [0.5]
        cfg = dict(TCFG, balance_target=target, balance_gain=0.2, balance_max_factor=300.0)
        info = train(model, data, "classify", cfg, seed=0, pad_id=tok.pad_token_id, progress=False)
        balance[target] = balancedness(predict(model, data.val, "classify", tok.pad_token_id, 32)[1])[0]
        assert ("final_aux_coefs" in info) == (target > 0)
    assert balance[0.0] < 0.6  # the plain aux loss at 0.01 leaves it collapsed
    assert balance[0.9] > 0.75, balance


def test_collate_trains_only_on_the_completion():
    ex = Example([5, 6, 7, 8, 9], loss_from=2)
    b = collate([ex, Example([5, 6], loss_from=0)], 0, 16, torch.device("cpu"), lm=True)
    assert b["targets"][0].tolist() == [-100, -100, 8, 9, -100]
    assert b["attn"][1].tolist() == [1, 1, 0, 0, 0]


def test_router_decision_rule():
    id2label = {0: "card_arrival", 1: "card_delivery_estimate", 2: "cancel_transfer", 3: "out_of_domain"}
    md = {"temperature": 1.0, "human_threshold": 0.6, "ood_label": "out_of_domain",
          "intent_queue": {"card_arrival": "sales", "card_delivery_estimate": "sales", "cancel_transfer": "billing"}}
    logits = torch.log(torch.tensor([
        [0.45, 0.40, 0.10, 0.05],  # two sales intents compete: the queue is still sure
        [0.30, 0.00, 0.35, 0.35],  # nothing reaches the threshold -> human
        [0.05, 0.05, 0.10, 0.80],  # out of domain -> human
    ]) + 1e-9)
    d = decide(logits, md, id2label)
    assert [x.queue for x in d] == ["sales", "human", "human"]
    assert d[0].intent == "card_arrival" and d[0].confidence == pytest.approx(0.85, abs=1e-3)
    assert d[1].intent in id2label.values()


def test_word_dropout_is_seeded():
    from moe_engine.train import _word_dropout

    t = "please tell me why my card payment was declined today"
    assert _word_dropout(t, 0.3, random.Random(3)) == _word_dropout(t, 0.3, random.Random(3))


def test_warm_start_moves_a_language_model_into_a_classifier(tok):
    from moe_engine.train import warm_start

    lm_cfg = dict(tiny_config("lm", tok.vocab_size), num_hidden_layers=2)
    lm = build_model(lm_cfg, seed=1)
    clf = build_model(tiny_config("classify", tok.vocab_size), seed=2)  # one layer, a fresh head
    head_before = clf.score.weight.detach().clone()
    info = warm_start(clf, lm)
    assert torch.equal(clf.embed_tokens.weight, lm.embed_tokens.weight)
    for name, t in clf.layers[0].state_dict().items():
        assert torch.equal(t, lm.layers[0].state_dict()[name]), name
    assert torch.equal(clf.score.weight, head_before)  # the head is not the LM's
    assert info["fresh_tensors"] == ["score.weight"] and info["source_layers_unused"] == 1

    wider = build_model(dict(tiny_config("classify", tok.vocab_size), hidden_size=48, head_dim=24), seed=0)
    with pytest.raises(ValueError, match="embed_tokens.weight has shape"):
        warm_start(wider, lm)


def test_distillation_pulls_the_student_towards_its_teachers(tok, tmp_path):
    from moe_engine.loader import save_checkpoint
    from moe_engine.train import distill_loss, load_teachers, teacher_probs

    torch.set_num_threads(1)
    data = cls_data(tok)
    teacher = build_model(tiny_config("classify", tok.vocab_size), seed=3)
    train(teacher, data, "classify", dict(TCFG, epochs=10), seed=3, pad_id=tok.pad_token_id, progress=False)
    save_checkpoint(teacher, tmp_path / "teacher")
    student_cfg = tiny_config("classify", tok.vocab_size)
    (loaded,) = load_teachers([tmp_path / "teacher"], student_cfg, "cpu")

    b = collate(data.val, tok.pad_token_id, 32, torch.device("cpu"), lm=False)
    student = build_model(student_cfg, seed=4)
    with torch.no_grad():
        target = teacher_probs([loaded], b["ids"], b["attn"], 2.0)
        own = torch.softmax(teacher.classify_logits(b["ids"], b["attn"]) / 2.0, -1)
        assert torch.allclose(target, own, atol=1e-6)
        assert float(distill_loss(teacher.classify_logits(b["ids"], b["attn"]), target, 2.0)) < 1e-6
        before = float(distill_loss(student.classify_logits(b["ids"], b["attn"]), target, 2.0))
    # pure distillation (weight 1): the hard labels play no part, only the teacher's distribution
    train(student, data, "classify", dict(TCFG, epochs=10, distill_weight=1.0), seed=4, pad_id=tok.pad_token_id,
          progress=False, teachers=[loaded])
    with torch.no_grad():
        after = float(distill_loss(student.classify_logits(b["ids"], b["attn"]), target, 2.0))
    assert after < 0.3 * before, (before, after)

    with pytest.raises(ValueError, match="another vocabulary or label set"):
        load_teachers([tmp_path / "teacher"], tiny_config("classify", tok.vocab_size, labels=5), "cpu")


def test_out_of_domain_training_texts():
    from moe_engine.data.banking77 import ood_texts

    base = ood_texts("train", n_augmented=100)
    more = ood_texts("train", n_augmented=100, extra=True)
    assert base == ood_texts("train", n_augmented=100)  # seeded
    extra_lines = [t for t in (Path(__file__).parents[2] / "data" / "ood" / "train_extra.txt").read_text().splitlines() if t]
    assert len(more) == len(base) + len(extra_lines) and set(extra_lines) <= set(more)
    assert not set(extra_lines) & set(base)
    # never trained on what the threshold and catch rate are measured with
    assert not {t.lower() for t in more} & {t.lower() for t in ood_texts("validation")}


def test_query_lm_data_ends_every_text_and_keeps_validation_apart(tmp_path):
    import json

    from moe_engine.data.banking77 import load_splits, main

    main(["query-lm-data", "--out", str(tmp_path)])
    rows = {n: [json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()] for n in ("train", "validation")}
    train, val = load_splits()
    assert len(rows["validation"]) == len(val) and len(rows["train"]) > len(train)
    assert all(r["prompt"] == "Query:" and r["completion"].endswith("<|end|>") for rs in rows.values() for r in rs)
    texts = {n: {r["completion"][1 : -len("<|end|>")] for r in rs} for n, rs in rows.items()}
    assert texts["validation"] == {t for t, _ in val} and {t for t, _ in train} <= texts["train"]
    # only what Banking77 itself repeats across the split (one query) is in both
    assert texts["train"] & texts["validation"] == {t for t, _ in train} & {t for t, _ in val}


def test_ticket_details_are_written_around_the_query_and_seeded():
    from moe_engine.data.banking77 import load_splits
    from moe_engine.data.details import add_details

    queries = [t for t, _ in load_splits()[0][::20]]
    amounts_inside = 0
    for q in queries:
        out = add_details(q, random.Random(q))
        assert out == add_details(q, random.Random(q))
        assert out != q and len(out) > len(q)
        # the customer's words all stay, in order; an amount may sit inside their noun phrase
        words, rest = re.findall(r"\w+", q), iter(re.findall(r"\w+", out))
        assert all(any(w == r for r in rest) for w in words), (q, out)
        amounts_inside += q not in out
    assert amounts_inside > 10


def test_detailed_examples_give_the_teachers_the_plain_text(tok):
    from moe_engine.train import DEFAULT_TRAIN, augment_example

    tcfg = dict(DEFAULT_TRAIN, details=1.0)
    e = Example(tok.encode(TEXTS[2]), 1, text=TEXTS[2])
    detailed = augment_example(e, tok, tcfg, random.Random(0))
    assert detailed.teacher_ids == tok.encode(TEXTS[2]) and len(detailed.ids) > len(detailed.teacher_ids)
    kept = augment_example(e, tok, tcfg, random.Random(0), details=False)  # e.g. an out-of-domain example
    assert kept.teacher_ids is None and kept.ids == e.ids

    b = collate([detailed, kept], tok.pad_token_id, 64, torch.device("cpu"), lm=False)
    assert b["teacher_ids"][0, : len(e.ids)].tolist() == e.ids and b["teacher_attn"][0].sum() == len(e.ids)
    assert b["teacher_ids"][1, : len(e.ids)].tolist() == e.ids and b["ids"].shape[1] > b["teacher_ids"].shape[1]
    assert "teacher_ids" not in collate([kept], tok.pad_token_id, 64, torch.device("cpu"), lm=False)


def test_soft_word_dropout_applies_to_examples_with_offline_teacher_logits_only(tok):
    """``soft_word_dropout`` keeps the words of the texts an offline teacher read (its logits are for
    the whole text) and leaves word dropout as it was for the others; unset, nothing changes."""
    from moe_engine.train import DEFAULT_TRAIN, augment_example

    text = "i would like to know why my card payment was declined at the shop today"
    plain = Example(tok.encode(text), 3, text=text)
    taught = Example(tok.encode(text), 3, text=text, soft=torch.zeros(5))
    transfer = Example(tok.encode(text), -1, text=text, soft=torch.zeros(5))
    tcfg = dict(DEFAULT_TRAIN, word_dropout=0.5)
    assert augment_example(taught, tok, tcfg, random.Random(0)).ids != taught.ids  # default: dropped
    assert augment_example(taught, tok, tcfg, random.Random(0)).ids == augment_example(plain, tok, tcfg, random.Random(0)).ids
    tcfg["soft_word_dropout"] = 0.0
    for e in (taught, transfer):
        assert augment_example(e, tok, tcfg, random.Random(0)).ids == e.ids
    assert augment_example(plain, tok, tcfg, random.Random(0)).ids != plain.ids
    tcfg.update(lowercase=1.0, subword_split=1.0)  # meaning-preserving: still applied
    out = augment_example(transfer, tok, tcfg, random.Random(0))
    assert out.ids != transfer.ids and tok.decode(out.ids).strip() == text


def soft_file(tmp_path, texts, logits, labels) -> Path:
    path = tmp_path / "soft.pt"
    torch.save({"teacher": "test", "labels": labels, "texts": texts, "logits": logits}, path)
    return path


def test_offline_teacher_labels_training_queries_and_trains_on_its_transfer_set(tok, tmp_path):
    """``soft_targets``: an offline teacher's logits by exact text; its other texts are a transfer set
    with no label, on which the student learns the teacher's distribution alone."""
    from moe_engine.train import attach_soft_targets, distill_loss

    torch.set_num_threads(1)
    labels = ["l0", "l1", "l2", "l3"]
    train_ex = [Example(tok.encode(t), i % 4, text=t) for i, t in enumerate(TEXTS[:8])]
    val_ex = [Example(tok.encode(t), i % 4, text=t) for i, t in enumerate(TEXTS[8:])]
    transfer = [" ".join(reversed(t.split())) for t in TEXTS[:8]] + ["card pin charged", "joke weather sea"]
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(len(TEXTS[:8]) + len(transfer), 4, generator=g)
    data = Dataset(train_ex, val_ex, {"labels": labels})
    info = attach_soft_targets(data, tok, soft_file(tmp_path, TEXTS[:8] + transfer, logits, labels))
    assert info["labelled_training_examples"] == 8 and info["transfer_texts"] == len(transfer)
    assert all(torch.equal(e.soft, logits[i]) for i, e in enumerate(data.train))
    assert [e.label for e in data.transfer] == [-1] * len(transfer) and [e.text for e in data.transfer] == transfer

    # a batch of transfer examples alone: no hard-label term, a finite distillation loss
    b = collate(data.transfer[:4], tok.pad_token_id, 32, torch.device("cpu"), lm=False)
    assert b["has_soft"].all() and torch.equal(b["soft"], logits[8:12])
    student = build_model(tiny_config("classify", tok.vocab_size), seed=4)
    from moe_engine.train import DEFAULT_TRAIN, step_loss

    tcfg = dict(DEFAULT_TRAIN, **TCFG, distill_weight=0.7, queue_loss_coef=0.5)
    loss, task_loss, _ = step_loss(student, b, "classify", tcfg)
    expected = 0.7 * distill_loss(student.classify_logits(b["ids"], b["attn"]), torch.softmax(b["soft"] / 2.0, -1), 2.0)
    assert torch.isfinite(loss) and torch.allclose(task_loss, expected, atol=1e-5)

    tb = collate(data.transfer, tok.pad_token_id, 32, torch.device("cpu"), lm=False)
    target = torch.softmax(tb["soft"] / 2.0, -1)
    with torch.no_grad():
        before = float(distill_loss(student.classify_logits(tb["ids"], tb["attn"]), target, 2.0))
    info = train(student, data, "classify", dict(TCFG, epochs=15, distill_weight=1.0, transfer_per_epoch=len(transfer)),
                 seed=4, pad_id=tok.pad_token_id, progress=False)
    assert info["steps"] == 15 * 3  # (8 labelled + 10 transfer) / batch 8 per epoch
    with torch.no_grad():
        after = float(distill_loss(student.classify_logits(tb["ids"], tb["attn"]), target, 2.0))
    assert after < 0.4 * before, (before, after)


def test_offline_teacher_file_is_refused_with_validation_texts_or_other_labels(tok, tmp_path):
    from moe_engine.train import attach_soft_targets

    ex = [Example(tok.encode(t), 0, text=t) for t in TEXTS]
    data = Dataset(ex[:8], ex[8:], {"labels": ["a", "b"]})
    with pytest.raises(ValueError, match="holds 1 validation texts"):
        attach_soft_targets(data, tok, soft_file(tmp_path, [TEXTS[0], TEXTS[9]], torch.zeros(2, 2), ["a", "b"]))
    with pytest.raises(ValueError, match="another label set"):
        attach_soft_targets(data, tok, soft_file(tmp_path, [TEXTS[0]], torch.zeros(1, 3), ["a", "b", "c"]))


def test_mixed_online_and_offline_teachers():
    from moe_engine.train import DEFAULT_TRAIN, batch_targets

    online = torch.tensor([[0.0, 4.0], [4.0, 0.0]])
    b = {"labels": torch.tensor([0, 1]), "soft": torch.tensor([[4.0, 0.0], [0.0, 0.0]]), "has_soft": torch.tensor([True, False])}

    class Fixed(torch.nn.Module):
        def classify_logits(self, ids, attn):
            return online

    b.update(ids=torch.zeros(2, 3, dtype=torch.long), attn=torch.ones(2, 3, dtype=torch.long))
    probs, has = batch_targets(b, [Fixed()], dict(DEFAULT_TRAIN, soft_targets_share=0.25, distill_temperature=1.0))
    want0 = 0.75 * torch.softmax(online[0], -1) + 0.25 * torch.softmax(b["soft"][0], -1)
    assert has.all() and torch.allclose(probs[0], want0) and torch.allclose(probs[1], torch.softmax(online[1], -1))
    probs, has = batch_targets(b, [], dict(DEFAULT_TRAIN, distill_temperature=1.0))
    assert has.tolist() == [True, False] and torch.allclose(probs[0], torch.softmax(b["soft"][0], -1))


def test_transfer_texts_swap_words_for_neighbours_and_splice_queries():
    from moe_engine.pretrained_teacher import splice, swap_words

    table = {"card": ["cards"], "arrived": ["come"]}
    rng = random.Random(0)
    assert swap_words("My card has not arrived?", table, 1.0, rng) == "My cards has not come?"
    assert swap_words("Card arrived", table, 0.0, rng) == "Card arrived"
    assert swap_words("Card", table, 1.0, rng) == "Cards"
    out = splice("my card has not arrived", "how do I change my pin", random.Random(1))
    first, *_ = out.split()
    assert first == "my" and out.split()[-1] == "pin" and out not in ("my card has not arrived", "how do I change my pin")


def test_transfer_set_holds_no_training_or_validation_text():
    from moe_engine.pretrained_teacher import make_transfer, training_texts, validation_texts

    table = {"card": ["cards", "visa"], "money": ["cash", "funds"], "transfer": ["payment"], "account": ["wallet"]}
    texts = make_transfer(table, n_swap=1, p_swap=0.5, n_splice=2000, seed=0)
    assert texts == make_transfer(table, n_swap=1, p_swap=0.5, n_splice=2000, seed=0)  # seeded
    assert len(texts) == len(set(texts)) > 3000
    assert not set(texts) & ({t for t, _ in training_texts()} | {t for t, _ in validation_texts()})
    assert any("funds" in t for t in texts) and any("wallet" in t for t in texts)


def test_transfer_set_takes_sampled_texts_but_never_a_training_or_validation_one():
    from moe_engine.pretrained_teacher import make_transfer, training_texts, validation_texts

    table = {"card": ["cards"]}
    plain = make_transfer(table, n_swap=1, n_splice=100, seed=0)
    train_text, val_text = training_texts()[0][0], validation_texts()[0][0]
    sampled = ["can my partner get a card too", train_text, val_text, "can my partner get a card too"]
    texts = make_transfer(table, n_swap=1, n_splice=100, seed=0, sampled=sampled)
    assert texts == [*plain, "can my partner get a card too"]


def test_sampled_queries_come_from_the_query_lm_seeded_whatever_the_batch(tmp_path):
    from moe_engine.pretrained_teacher import sample_queries

    torch.set_num_threads(1)
    d = tmp_path / "lm"
    save(train_tokenizer(iter(TEXTS * 3), 300, ["<|pad|>", "<|end|>"]), d, pad="<|pad|>", eos="<|end|>", max_length=64)
    tok = Tokenizer.from_dir(d)
    ex = []
    for t in TEXTS:
        p, c = tok.encode("Query:"), tok.encode(" " + t + "<|end|>")
        ex.append(Example(p + c, loss_from=len(p) - 1))
    model = build_model(dict(tiny_config("lm", tok.vocab_size), eos_token_id=tok.eos_token_id), seed=0)
    train(model, Dataset(ex, ex), "lm", dict(TCFG, epochs=40), seed=0, pad_id=tok.pad_token_id, progress=False)
    save_checkpoint(model, d)

    texts = sample_queries(d, 24, seed=5, batch=8, max_new_tokens=24)
    assert texts == sample_queries(d, 24, seed=5, batch=24, max_new_tokens=24)
    assert texts != sample_queries(d, 24, seed=6, batch=8, max_new_tokens=24)
    assert len(texts) >= 12 and all(len(t.split()) >= 2 for t in texts)
    words = {w for t in TEXTS for w in t.split()}
    assert sum(w in words for t in texts for w in t.split()) > 0.8 * sum(len(t.split()) for t in texts)

    from moe_engine.pretrained_teacher import main

    main(["sample", "--lm", str(d), "--n", "16", "--seed", "5", "--out", str(tmp_path / "s.txt")])
    assert (tmp_path / "s.txt").read_text().splitlines() == sample_queries(d, 16, seed=5)


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    """A random 1-layer BERT with a word-piece vocabulary of the test texts, in the layout the
    pretrained teacher loads (the real one, all-MiniLM-L6-v2, comes from a package CI does not install)."""
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("encoder")
    words = sorted({w for t in TEXTS for w in t.lower().split()} | {"cards", "payment", "money"})
    from tokenizers import Tokenizer as WordPieceTokenizer
    from tokenizers import models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    wp = WordPieceTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                         sep_token="[SEP]", mask_token="[MASK]").save_pretrained(d)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(d)
    return d


def test_pretrained_teacher_labels_training_and_transfer_texts_never_validation(tiny_encoder_dir):
    from moe_engine.pretrained_teacher import (
        Teacher,
        label,
        neighbour_table,
        router_labels,
        training_texts,
        validation_texts,
    )

    torch.set_num_threads(1)
    teacher = Teacher(tiny_encoder_dir, len(router_labels()))
    val = [t for t, _ in validation_texts()]
    saved = label(teacher, ["my cards have not arrived", val[0]])
    assert saved["labels"] == router_labels() and saved["logits"].shape == (len(saved["texts"]), len(router_labels()))
    assert "my cards have not arrived" in saved["texts"] and not set(saved["texts"]) & set(val)
    assert set(saved["texts"]) >= {t for t, _ in training_texts()} - set(val)
    # a text's logits do not depend on the batch it was padded in
    i = saved["texts"].index("my cards have not arrived")
    assert torch.allclose(saved["logits"][i], teacher.logits(["my cards have not arrived"])[0], atol=1e-5)
    # an ensemble's file holds the mean of its members' logits
    torch.manual_seed(1)
    other = Teacher(tiny_encoder_dir, len(router_labels()))
    both = label([teacher, other], ["my cards have not arrived"])
    assert both["texts"] == label(other, ["my cards have not arrived"])["texts"] and both["teacher"].endswith("x2")
    j = both["texts"].index("my cards have not arrived")
    mean = (teacher.logits(["my cards have not arrived"]) + other.logits(["my cards have not arrived"])) / 2
    assert torch.allclose(both["logits"][j], mean[0], atol=1e-5)
    assert not torch.allclose(both["logits"][j], saved["logits"][i], atol=1e-3)

    table = neighbour_table(teacher, {"card", "money", "the", "notinvocab"}, k=3)
    assert set(table) == {"card", "money"}  # stop words and unknown words keep their place
    assert all(len(v) == 3 and w not in v for w, v in table.items())


def test_token_embeddings_give_tokens_that_spell_the_same_word_the_same_start(tiny_encoder_dir):
    from moe_engine.pretrained_teacher import token_embeddings, token_texts

    router_tok = Path(__file__).resolve().parents[2] / "checkpoints" / "router"
    tok = Tokenizer.from_dir(router_tok)
    texts = token_texts(router_tok)
    card, spaced = tok.encode("card", add_special_tokens=False), tok.encode(" card", add_special_tokens=False)
    assert len(card) == len(spaced) == 1 and texts[card[0]] == texts[spaced[0]] == "card"
    assert texts[tok.pad_token_id] is None  # special tokens spell nothing
    assert any(t is None for t in texts[:256]) and all(t is None or "\ufffd" not in t for t in texts)

    torch.set_num_threads(1)
    saved = token_embeddings(router_tok, 8, encoder=tiny_encoder_dir)
    table, mapped = saved["embeddings"], saved["mapped"]
    assert table.shape == (tok.vocab_size, 8) and mapped.tolist() == [t is not None for t in texts]
    assert torch.allclose(table[card[0]], table[spaced[0]]) and not table[~mapped].any()
    assert not torch.allclose(table[card[0]], table[tok.encode(" fee", add_special_tokens=False)[0]])
    assert 0 < saved["explained_variance"] <= 1
    with pytest.raises(ValueError, match="narrower than the student"):
        token_embeddings(router_tok, 64, encoder=tiny_encoder_dir)


def test_init_embeddings_start_mapped_tokens_from_the_table_at_the_init_scale(tok, tmp_path):
    from moe_engine.train import init_token_embeddings

    model = build_model(tiny_config("lm", tok.vocab_size), seed=0)
    before = model.embed_tokens.weight.detach().clone()
    table = torch.randn(tok.vocab_size, 32) * 5
    mapped = torch.zeros(tok.vocab_size, dtype=torch.bool)
    mapped[10:200] = True
    torch.save({"embeddings": table, "mapped": mapped, "encoder": "test", "explained_variance": 0.5}, tmp_path / "e.pt")
    info = init_token_embeddings(model, tmp_path / "e.pt", std=0.02)
    after = model.embed_tokens.weight.detach()
    assert info["mapped_tokens"] == 190 and torch.equal(after[~mapped], before[~mapped])
    assert torch.allclose(after[mapped].pow(2).mean().sqrt(), torch.tensor(0.02), rtol=1e-4)
    assert torch.allclose(after[mapped] / after[mapped].norm(dim=-1, keepdim=True),
                          table[mapped] / table[mapped].norm(dim=-1, keepdim=True), atol=1e-5)

    torch.save({"embeddings": torch.randn(tok.vocab_size, 48), "mapped": mapped}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="wide.pt holds a .* table, the model's embeddings are"):
        init_token_embeddings(model, tmp_path / "wide.pt", std=0.02)


def test_a_training_run_starts_from_init_embeddings_and_records_it(tmp_path):
    import json

    from moe_engine.train import run

    router_tok = Path(__file__).resolve().parents[2] / "checkpoints" / "router"
    vocab = Tokenizer.from_dir(router_tok).vocab_size
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"prompt": "Query:", "completion": " " + t}) + "\n"
                                                          for t in TEXTS))
    table = torch.randn(vocab, 32)
    mapped = torch.ones(vocab, dtype=torch.bool)
    torch.save({"embeddings": table, "mapped": mapped, "encoder": "test"}, tmp_path / "e.pt")
    cfg = {"model": tiny_config("lm", vocab), "data": {"train": str(tmp_path / "train.jsonl"),
                                                       "validation": str(tmp_path / "validation.jsonl")},
           "train": {**TCFG, "lr": 0.0, "warmup_steps": 1, "init_embeddings": str(tmp_path / "e.pt")}}
    out = run("lm", cfg, tmp_path / "lm", seed=0, tokenizer_dir=router_tok, progress=False, max_steps=1)
    assert json.loads((tmp_path / "lm" / "train_config.json").read_text())["embedding_init"]["mapped_tokens"] == vocab
    weight = out["model"].embed_tokens.weight.detach()  # lr 0: the table as it was put in
    assert torch.allclose(weight / weight.norm(dim=-1, keepdim=True), table / table.norm(dim=-1, keepdim=True), atol=1e-5)
