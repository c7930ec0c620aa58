"""The shipped default checkpoints load through moe_engine.load_model and make known predictions."""
import json
from pathlib import Path

import pytest
import torch

from moe_engine import load_model
from moe_engine.data.router import decide
from support_agents.language import extract_arguments, faithfulness_problems, write_reply
from support_agents.language.evaluate import field_misses

ROOT = Path(__file__).resolve().parents[2] / "checkpoints"


@pytest.fixture(scope="module")
def router():
    torch.set_num_threads(1)
    return load_model(ROOT / "router")


@pytest.fixture(scope="module")
def agent():
    torch.set_num_threads(1)
    return load_model(ROOT / "agent")


@pytest.mark.parametrize("name", ["router", "agent"])
def test_checkpoint_files_and_size(name):
    d = ROOT / name
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "model_card.md",
              "routing_heatmap.png"):
        assert (d / f).is_file(), f
    assert sum(p.stat().st_size for p in d.iterdir()) < 50 * 2**20
    card = (d / "model_card.md").read_text()
    assert "balancedness" in card and "python -m moe_engine.train" in card


def route(router, texts):
    cfg = json.loads((ROOT / "router" / "config.json").read_text())
    out = router.classify(texts)
    return decide(out.logits, cfg["moedesk"], router.config.id2label)


def test_router_config_is_calibrated_and_maps_every_intent():
    cfg = json.loads((ROOT / "router" / "config.json").read_text())
    md = cfg["moedesk"]
    assert 0.05 < md["temperature"] < 20 and 0.0 <= md["human_threshold"] < 1.0
    queues = json.loads((ROOT.parent / "data" / "banking77" / "queues.json").read_text())
    assert md["intent_queue"] == queues
    assert set(cfg["id2label"].values()) == set(queues) | {md["ood_label"]}


def test_router_known_predictions(router):
    cases = {
        "My new card still hasn't arrived, when will it come?": ("sales", "card_arrival"),
        "I want to cancel the transfer I made this morning": ("billing", "cancel_transfer"),
        "How can I change the PIN on my card?": ("technical", "change_pin"),
        "I was charged twice for the same purchase": ("billing", "transaction_charged_twice"),
        "The ATM swallowed my card": ("technical", "card_swallowed"),
        # the demo's flows, as triage sees them (subject + body): a candidate router that was better
        # on validation read the refunds as Refund_not_showing_up, dropping the approval flow
        "Refund for returned goods\nI want a refund for my 250.00 Tesco payment, I returned the goods.":
            ("billing", "request_refund"),
        "Another refund\nCan I get a refund for my 250.00 Tesco payment? I sent the item back.":
            ("billing", "request_refund"),
        "Payment declined\nMy card payment got declined when I tried to pay at the store, but the money was taken":
            ("technical", "declined_card_payment"),
    }
    got = route(router, list(cases))
    for (text, (queue, intent)), d in zip(cases.items(), got, strict=True):
        assert (d.queue, d.intent) == (queue, intent), (text, d)


def test_router_sends_out_of_domain_text_to_human(router):
    texts = ["What is a good recipe for lasagne?", "Who won the football match last night?",
             "Write me a poem about the ocean", "asdkjh qwe zxcmn"]
    assert [d.queue for d in route(router, texts)] == ["human"] * len(texts)


def test_router_routing_is_visible(router):
    out = router.classify(["my card is not working"])
    layers = len(router.config.moe_layers)
    assert out.routing[0].shape[0] == layers and out.routing[0].shape[2] == router.config.top_k


def test_agent_extracts_clear_arguments(agent):
    args = extract_arguments(agent, intent="transaction_charged_twice",
                             text="I was charged twice at Tesco, 23.50 GBP each time.", fields=["merchant", "amount"])
    # the shipped model gets the merchant; its amount copying is unreliable (see the model card), and
    # grounding guarantees a wrong amount never comes back, only None
    assert args["merchant"] == "Tesco"
    assert args["amount"] in (None, "23.50")


def test_agent_extracts_an_amount_written_without_a_currency(agent):
    # the demo's refund request; stage 6 returned None for a bare "250.00" inside a noun phrase
    for text in ("I want a refund for my 250.00 Tesco payment, I returned the goods.",
                 "Can I get a refund for my 250.00 Tesco payment? I sent the item back."):
        args = extract_arguments(agent, intent="request_refund", text=text, fields=["amount", "currency", "merchant"])
        assert args == {"amount": "250.00", "currency": None, "merchant": "Tesco"}, (text, args)


# Amounts without a currency in customers' own wordings (docs/benchmarks.md § Stage 8): first the
# ten of sets A and B (written before stage 8's data) that stage 7 missed, then all of set C, written
# after stage 8 had trained and before any of its outputs on C were seen, never used to change data
# or training (stage 7 reads 9 of its 16). Each extraction asks for its procedure's fields.
BARE_AMOUNTS = [
    ("card_payment_not_recognised", "There is a payment of 19.99 I don't recognise.", "19.99"),
    ("cash_withdrawal_not_recognised", "There's a withdrawal of 200.00 I did not make.", "200.00"),
    ("transfer_not_received_by_recipient", "My friend did not get the 300.00 I sent.", "300.00"),
    ("transaction_charged_twice", "I got charged twice for 7.49", "7.49"),
    ("extra_charge_on_statement", "There is an extra 1.00 on my statement", "1.00"),
    ("pending_card_payment", "My account shows 250.00 pending since Monday.", "250.00"),
    ("cash_withdrawal_charge", "The ATM charged me 2.50 for taking money out.", "2.50"),
    ("request_refund", "I want my 45.00 back.", "45.00"),
    ("transfer_not_received_by_recipient", "Sent 500.00 to my landlord and he says nothing arrived.", "500.00"),
    ("card_payment_not_recognised", "Hello, 14.99 disappeared from my account this morning.", "14.99"),
    # set C
    ("card_payment_not_recognised", "Who is charging me 6.66 every month? I never agreed to it.", "6.66"),
    ("transaction_charged_twice", "Two identical debits of 31.20 went out on Friday.", "31.20"),
    ("pending_card_payment", "Why is 74.35 still on hold at the hotel?", "74.35"),
    ("request_refund", "The shop agreed to give me 59.00 back but nothing came.", "59.00"),
    ("Refund_not_showing_up", "Merchant says the 88.80 refund was sent last week.", "88.80"),
    ("cash_withdrawal_not_recognised", "An ATM withdrawal for 140.00 appeared that wasn't me.", "140.00"),
    ("wrong_amount_of_cash_received", "Only got half of the 200.00 out of the cash machine.", "200.00"),
    ("transfer_not_received_by_recipient", "My mum is still waiting for the 750.00.", "750.00"),
    ("pending_transfer", "I moved 1250.00 to my savings and it's still pending.", "1250.00"),
    ("failed_transfer", "Tried sending 65.00 to Tom and it failed.", "65.00"),
    ("top_up_failed", "Adding 30.00 from my debit card keeps failing.", "30.00"),
    ("pending_top_up", "My top up for 25.00 has been processing for hours.", "25.00"),
    ("card_payment_fee_charged", "You took an extra 0.75 when I paid for lunch.", "0.75"),
    ("declined_card_payment", "Couldn't pay 12.40 for my train ticket, declined again.", "12.40"),
    ("card_payment_wrong_exchange_rate", "I paid 300.00 in the airport shop and the rate was awful.", "300.00"),
    ("direct_debit_payment_not_recognised", "A direct debit for 42.00 came out and I don't know it.", "42.00"),
]


def test_agent_finds_amounts_customers_write_without_a_currency(agent):
    missed = field_misses(agent, "amount", BARE_AMOUNTS)
    assert not missed, missed


# Recipients named in customers' own sentences (data/wordings/recipients.json, sets D, E, F;
# docs/benchmarks.md § Stage 9). Stage 8 read 4 of these 48, stage 9 reads 22: the test holds that
# floor and lists the misses, so a later model that reads fewer fails.
RECIPIENTS = [tuple(case) for name in "DEF" for case in json.loads(
    (ROOT.parent / "data" / "wordings" / "recipients.json").read_text())[name]]


def test_agent_finds_recipients_customers_name_in_their_own_words(agent):
    missed = field_misses(agent, "recipient", RECIPIENTS)
    assert len(RECIPIENTS) - len(missed) >= 22, missed


def test_agent_reply_is_specific_and_checked(agent):
    facts = {"transaction": "TX0000120003", "merchant": "Tesco", "amount": "23.50 GBP", "date": "2026-03-03",
             "transaction_status": "completed"}
    r = write_reply(agent, customer_name="Alice Smith", intent="transaction_charged_twice", facts=facts,
                    message="I was charged twice at Tesco")
    assert r.text.startswith(("Hi Alice", "Hello Alice", "Dear Alice"))
    assert r.problems == faithfulness_problems(r.text, facts, customer_name="Alice Smith")
    assert r.faithful == (not r.problems)
