"""Training and evaluation examples for the agent model, generated from Banking77 queries.

Each example is what a procedure would ask the model: extract these fields from this ticket, or
write a reply to this customer from these facts. We inject slot values (amounts, currencies,
merchants, dates, card digits, references, recipients, countries, products) into real queries or
template sentences, build procedure-like facts (transactions, fees, refunds, statuses, products,
delivery estimates) with random values, and write the target reply from those facts only, with
varied wording, so the model learns to copy values from the facts rather than recall one canned
text per intent. ``python -m support_agents.language.synth --out DIR`` writes train/validation
JSONL files of {"task", "prompt", "completion", ...}; validation uses the Banking77 validation
split's queries and a different seed, so no query or value combination is shared with training.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from moe_engine.data.details import PAYMENT_NOUN, amount_in_payment_noun

from . import prompts
from .faithfulness import faithfulness_problems, intent_topic
from .fields import CURRENCIES, FIELDS, PRODUCTS, grounded, normalize
from .phrasing import CLOSERS, fact_sentences, openings
from .procedure_facts import World, load_bank_constants, load_procedures, procedure_facts

PROCEDURES = load_procedures()
BANK = load_bank_constants()

FIRST = (
    "Alice", "Ben", "Chloe", "Daniel", "Emma", "Farah", "George", "Hannah", "Ivan", "Julia", "Kofi", "Laura",
    "Mohammed", "Nina", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tara", "Umar", "Valeria", "William",
    "Xin", "Yusuf", "Zoe", "Aoife", "Bartosz", "Carmen", "Dmitri", "Elif", "Fionn", "Grace", "Hiroshi",
    "Ines", "Jakub", "Kemi", "Luca", "Maya", "Noah", "Olga", "Pedro", "Sofia", "Tomas", "Wei", "Amara",
)
LAST = (
    "Smith", "Jones", "Okafor", "Nowak", "Garcia", "Rossi", "Muller", "Khan", "Chen", "Dubois", "Silva",
    "Patel", "Murphy", "Kowalski", "Andersen", "Tanaka", "Haddad", "Novak", "Byrne", "Costa", "Fischer",
    "Ivanova", "Mensah", "Lopez", "Schmidt", "Walsh", "Yilmaz", "Hughes", "Kim", "Singh",
)
MERCHANTS = (
    "Tesco", "Amazon", "Uber", "Starbucks", "Zara", "IKEA", "Lidl", "Netflix", "Spotify", "Ryanair",
    "Deliveroo", "Apple Store", "Boots", "Primark", "Costa Coffee", "Shell", "Airbnb", "Booking.com",
    "Sainsbury's", "Pret A Manger", "eBay", "Steam", "H&M", "Decathlon", "Aldi", "Waitrose", "Argos",
    "Currys", "McDonald's", "Easyjet", "Trainline", "Asos", "Etsy", "Ocado", "Nando's", "Greggs",
)
COUNTRIES = (
    "France", "Spain", "Germany", "Italy", "Portugal", "Poland", "Ireland", "Greece", "Netherlands",
    "Belgium", "Sweden", "Norway", "Switzerland", "Austria", "Turkey", "Japan", "Thailand", "Mexico",
    "Canada", "Australia", "Croatia", "Morocco", "Egypt", "Brazil", "India", "Vietnam", "Denmark",
)
SYMBOL = {"GBP": "£", "EUR": "€", "USD": "$"}
STATUSES = ("pending", "completed", "declined", "reverted", "under review", "processing", "failed", "on hold")
CARD_STATUSES = ("active", "frozen", "blocked", "expired", "not yet activated", "cancelled")
INCIDENTS = (
    "card payments delayed", "top-ups failing for some users", "app login issues", "transfers delayed",
    "contactless outage", "ATM withdrawals declined abroad", "no known incident",
)
NEXT_STEPS = (
    "verify your identity in the app", "freeze the card in the app", "contact the merchant first",
    "wait for the payment to settle", "order a replacement card", "reset the PIN at an ATM",
    "upload a photo of your ID", "check the recipient details", "update the app", "use chip and PIN",
)
DATE_STYLES = ("iso", "dmy_slash", "d_month", "month_d", "d_month_y")


def _money(rng: random.Random, big: bool = False) -> str:
    v = rng.choice((rng.randint(1, 60), rng.randint(5, 400), rng.randint(20, 3000) if big else rng.randint(1, 30)))
    return f"{v}.{rng.randint(0, 99):02d}" if rng.random() < 0.7 else str(v)


def _date(rng: random.Random, today: date) -> date:
    return today - timedelta(days=rng.randint(0, 200))


def _spell_date(d: date, style: str, rng: random.Random) -> str:
    month = d.strftime("%B")
    if rng.random() < 0.25:
        month = month[:3]
    suffix = rng.choice(("", "", "th")) if style in ("d_month", "month_d") else ""
    if suffix:
        suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}.get(d.day, "th")
    return {
        "iso": d.isoformat(),
        "dmy_slash": d.strftime("%d/%m/%Y"),
        "d_month": f"{d.day}{suffix} {month}",
        "month_d": f"{month} {d.day}{suffix}",
        "d_month_y": f"{d.day} {month} {d.year}",
    }[style]


def _spell_amount(amount: str, currency: str, rng: random.Random, bare: float = 0.0) -> tuple[str, str]:
    """(the amount as written in the text, the number part the extractor should copy).

    ``bare``: the share of amounts with pence written without any currency ("my 250.00 payment"),
    as customers often do; 0 draws nothing extra, so older data sets come out unchanged.
    """
    if bare > 0 and "." in amount and rng.random() < bare:
        return amount, amount
    r = rng.random()
    shown = f"{int(float(amount)):,}" if "." not in amount and rng.random() < 0.3 else amount
    if currency in SYMBOL and r < 0.5:
        return f"{SYMBOL[currency]}{shown}", shown
    if r < 0.75:
        return f"{shown} {currency if rng.random() < 0.5 else currency.lower()}", shown
    names = [n for n in CURRENCIES[currency] if n.isalpha() and len(n) > 3]
    return f"{shown} {rng.choice(names) if names else currency}", shown


# -- intent families: which fields a procedure asks for, what facts it gathers ---------------------
FAMILIES: dict[str, tuple[str, ...]] = {
    "card_payment": (
        "card_payment_fee_charged", "card_payment_not_recognised", "card_payment_wrong_exchange_rate",
        "pending_card_payment", "reverted_card_payment?", "transaction_charged_twice", "request_refund",
        "Refund_not_showing_up", "declined_card_payment", "extra_charge_on_statement",
        "direct_debit_payment_not_recognised", "exchange_charge",
    ),
    "cash": (
        "cash_withdrawal_charge", "cash_withdrawal_not_recognised", "pending_cash_withdrawal",
        "wrong_amount_of_cash_received", "wrong_exchange_rate_for_cash_withdrawal", "declined_cash_withdrawal",
        "atm_support", "card_swallowed",
    ),
    "transfer": (
        "cancel_transfer", "pending_transfer", "transfer_not_received_by_recipient", "failed_transfer",
        "declined_transfer", "transfer_fee_charged", "balance_not_updated_after_bank_transfer",
        "beneficiary_not_allowed", "transfer_timing", "transfer_into_account", "receiving_money",
    ),
    "top_up": (
        "pending_top_up", "top_up_failed", "top_up_reverted", "top_up_by_card_charge",
        "top_up_by_bank_transfer_charge", "verify_top_up", "top_up_limits", "topping_up_by_card",
        "automatic_top_up", "top_up_by_cash_or_cheque", "balance_not_updated_after_cheque_or_cash_deposit",
    ),
    "card": (
        "activate_my_card", "card_not_working", "change_pin", "compromised_card", "contactless_not_working",
        "lost_or_stolen_card", "pin_blocked", "virtual_card_not_working", "card_linking",
        "apple_pay_or_google_pay", "card_about_to_expire", "card_arrival", "card_delivery_estimate",
    ),
    "product": (
        "get_physical_card", "order_physical_card", "getting_spare_card", "getting_virtual_card",
        "get_disposable_virtual_card", "disposable_card_limits", "visa_or_mastercard",
        "supported_cards_and_currencies", "fiat_currency_support", "exchange_rate", "exchange_via_app",
        "country_support", "card_acceptance", "age_limit",
    ),
    "account": (
        "verify_my_identity", "unable_to_verify_identity", "why_verify_identity", "verify_source_of_funds",
        "edit_personal_details", "passcode_forgotten", "lost_or_stolen_phone", "terminate_account",
    ),
}
FAMILY_OF = {intent: fam for fam, intents in FAMILIES.items() for intent in intents}
FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "card_payment": ("amount", "currency", "merchant", "date", "card_last4"),
    "cash": ("amount", "currency", "country", "date", "card_last4"),
    "transfer": ("amount", "currency", "recipient", "date", "transfer_reference"),
    "top_up": ("amount", "currency", "date", "card_last4"),
    "card": ("card_last4", "country", "merchant", "date"),
    "product": ("product", "country", "currency"),
    "account": ("date", "country"),
}

# slot sentences appended to (or standing in for) a real query; {x} are filled with spelled values
SLOT_SENTENCES: dict[str, tuple[str, ...]] = {
    "card_payment": (
        "It was {amount} at {merchant} on {date}.", "The payment to {merchant} was {amount}.",
        "I paid {amount} to {merchant}.", "This was on {date} with my card ending {card_last4}.",
        "{merchant} took {amount} on {date}.", "Card ending in {card_last4}, {amount} at {merchant}.",
        "I see {amount} from {merchant} on my statement.", "The transaction on {date} was for {amount}.",
    ),
    "cash": (
        "I took out {amount} in {country} on {date}.", "It was an ATM in {country}, {amount}.",
        "I withdrew {amount} with my card ending {card_last4}.", "This happened on {date} in {country}.",
        "The machine gave me less than {amount}.", "Card ending {card_last4}, in {country}.",
    ),
    "transfer": (
        "I sent {amount} to {recipient} on {date}.", "The reference was {transfer_reference}.",
        "It was {amount} to {recipient}, reference {transfer_reference}.", "I transferred {amount} on {date}.",
        "{recipient} still hasn't got the {amount} I sent.", "Transfer ref {transfer_reference} from {date}.",
    ),
    "top_up": (
        "I topped up {amount} on {date}.", "The top-up was {amount} from my card ending {card_last4}.",
        "I added {amount} to my account.", "It was on {date} for {amount}.",
        "My top up of {amount} with card {card_last4} on {date}.",
    ),
    "card": (
        "My card ends in {card_last4}.", "It is the card ending {card_last4}.",
        "It stopped working in {country} on {date}.", "It failed at {merchant}.",
        "Card ending {card_last4}, since {date}.", "I'm in {country} right now.",
    ),
    "product": (
        "I'm interested in the {product}.", "Does the {product} work in {country}?",
        "I live in {country}.", "I want to pay in {currency_name}.", "Tell me about the {product}.",
        "Can I get the {product} if I live in {country}?", "Can I hold {currency_name} in my account?",
    ),
    "account": (
        "I'm currently in {country}.", "I tried on {date}.", "This started on {date}.",
        "I moved to {country}.", "I applied on {date} while in {country}.",
    ),
}
# more slot sentences, used with bare amounts (synth --bare-amounts): the amount inside a noun
# phrase ("my 250.00 Tesco payment"), where the extractor must still find it
NOUN_PHRASE_SLOT_SENTENCES: dict[str, tuple[str, ...]] = {
    "card_payment": (
        "I want a refund for my {amount} {merchant} payment.", "Can I get my {amount} back from {merchant}?",
        "The {merchant} charge of {amount} is wrong.", "My {amount} payment on {date} is the problem.",
        "It is about the {amount} {merchant} purchase.",
    ),
    "cash": ("My {amount} withdrawal in {country} went wrong.", "The {amount} cash withdrawal on {date}."),
    "transfer": ("My {amount} transfer to {recipient} hasn't arrived.", "It is about the {amount} payment to {recipient}."),
    "top_up": ("My {amount} top-up on {date} is missing.", "The {amount} top up did not show."),
}
_SLOT = re.compile(r"\{(\w+)\}")
_UNSAFE = re.compile(
    r"\d|£|€|\$|¥|\b(" + "|".join(sorted({n for ns in CURRENCIES.values() for n in ns if n.isalpha()} | {c.lower() for c in CURRENCIES})) + r")\b"
    + r"|\b(" + "|".join(m for m in ("january", "february", "march", "april", "june", "july", "august", "september",
                                       "october", "november", "december", "yesterday", "today")) + r")\b",
    re.I,
)


def safe_query(text: str) -> bool:
    """A query with no amounts, currencies, dates or products of its own, so its labels are known."""
    return not _UNSAFE.search(text) and not any(p.lower() in text.lower() for p in PRODUCTS) and not any(
        c.lower() in text.lower() for c in COUNTRIES
    )


@dataclass(frozen=True)
class Variety:
    """Shares of the generator's optional variations. Each at 0 draws nothing, so a data set built
    without it comes out byte for byte as before the option existed."""

    bare_amounts: float = 0.0  # amounts with pence written without a currency (``_spell_amount``)
    amounts_in_query: float = 0.0  # the amount written into the query's own noun phrase
    open_names: float = 0.0  # recipients with made-up names instead of the FIRST/LAST lists
    recipients_in_query: float = 0.0  # "to a friend" -> "to my friend Kaleno" in the query itself


# Made-up names keep the extractor from leaning on which names exist (FIRST/LAST are a lexicon it
# could learn by heart). Measured, they were not what it lacked: it reads unseen names inside the
# template sentences and missed them in customers' own words (docs/benchmarks.md, Stage 9).
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
           "br", "ch", "dr", "fr", "gr", "kr", "sh", "st", "th", "tr", "", "")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "ia", "ie", "ou", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "k", "t", "nd", "rt", "sh", "x")


def _made_up_word(rng: random.Random) -> str:
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 3))) + rng.choice(_CODAS)
    if len(word) < 3:
        word += rng.choice(("n", "th", "ra", "lo"))
    word = word.capitalize()
    r = rng.random()
    if r < 0.05:
        word = rng.choice(("O'", "Mc", "Mac")) + word
    elif r < 0.1:
        word += "-" + _made_up_word(rng)
    return word


def made_up_name(rng: random.Random) -> str:
    """A person's name that is in no list: one to three capitalised made-up words."""
    n = rng.choices((1, 2, 3), weights=(4, 5, 1))[0]
    return " ".join(_made_up_word(rng) for _ in range(n))


def _slot_values(rng: random.Random, today: date, open_names: float = 0.0) -> dict[str, str]:
    currency = rng.choice(("GBP", "GBP", "EUR", "EUR", "USD", "USD", "CHF", "JPY", "PLN", "SEK", "AUD", "CAD"))
    vals = {
        "amount": _money(rng, big=rng.random() < 0.2),
        "currency": currency,
        "merchant": rng.choice(MERCHANTS),
        "date": _spell_date(_date(rng, today), rng.choice(DATE_STYLES), rng),
        "card_last4": f"{rng.randint(0, 9999):04d}",
        "country": rng.choice(COUNTRIES),
        "product": rng.choice(PRODUCTS),
        "transfer_reference": rng.choice(("TR", "REF", "PAY", "")) + f"{rng.randint(10000, 99999999)}",
        "recipient": f"{rng.choice(FIRST)} {rng.choice(LAST)}" if rng.random() < 0.7 else rng.choice(FIRST),
    }
    if open_names > 0 and rng.random() < open_names:
        vals["recipient"] = made_up_name(rng)
    return vals


def _slot_sentences(family: str, bare_amounts: float, used: dict[str, str]) -> tuple[str, ...]:
    extra = NOUN_PHRASE_SLOT_SENTENCES.get(family, ()) if bare_amounts > 0 else ()
    sentences = SLOT_SENTENCES[family] + extra
    # one amount and one recipient per text: a second one would make the label ambiguous
    taken = [f"{{{key}}}" for key in ("amount", "recipient") if key in used]
    return tuple(s for s in sentences if not any(t in s for t in taken))


# where a real query already names the money ("the payment", "my money", "I was charged twice"), the
# amount can go into the customer's own sentence ("the 19.99 payment", "a payment of 19.99", "my
# 45.00", "I was charged 12.99 twice")
_MONEY_NOUN = re.compile(
    # a bare "money" after a quantity word ("enough money", "less money than") would read wrongly
    r"\b(?:(the|my|some|any)\s+|(?<!enough )(?<!less )(?<!more )(?<!much )(?<!of )(?<!no ))(money|funds)\b"
    r"|\b(the|my|some)\s+cash\b",
    re.I,
)
# a verb of paying with no object of its own ("I was charged twice", "I paid for it") takes the amount
_PAYING_VERB = re.compile(
    r"\b(charged|sent|withdrew|transferred|topped up|paid|spent)\b(?=\s+(?:twice|for|on|to|by|from|in|at|with|yesterday)\b|\s*[.,!?]|\s*$)",
    re.I,
)


def _amount_into_query(query: str, family: str, vals: dict[str, str], rng: random.Random,
                       bare_amounts: float) -> tuple[str, dict[str, str]] | None:
    """The query with the amount written into its own noun phrase, or None where it names no money."""
    if "amount" not in FAMILY_FIELDS[family]:
        return None
    spelled, number = _spell_amount(vals["amount"], vals["currency"], rng, bare_amounts)
    used = {"amount": number, "currency": vals["currency"]}
    if m := PAYMENT_NOUN.search(query):
        return amount_in_payment_noun(query, m, spelled, rng), used
    if m := _MONEY_NOUN.search(query):
        det = m.group(1) or m.group(3)
        phrase = f"{det} {spelled}" if det and det.lower() in ("the", "my") else spelled
    elif m := _PAYING_VERB.search(query):
        phrase = f"{m.group(1)} {spelled}"
    else:
        return None
    return query[: m.start()] + phrase + query[m.end():], used


# a query that names the person paid ("to a friend", "my mum", "the recipient", "someone") can
# carry the name itself
_PERSON = re.compile(
    r"\b(?:(a|my|the|his|her)\s+(friend|brother|sister|mum|mom|mother|dad|father|son|daughter|landlord|"
    r"colleague|wife|husband|partner|cousin|uncle|aunt|boss|roommate|flatmate|girlfriend|boyfriend)"
    r"|the\s+(recipient|payee|beneficiary|receiver|other person)|(someone|somebody|a person))\b",
    re.I,
)
# and one that speaks of the transfer or of sending money can say whom to: "my transfer to Kaleno",
# "I sent money to Kaleno" (not where a "to"/"from"/"into" phrase follows already)
_TRANSFER_PHRASE = re.compile(
    r"\b(?:(?:my|the|a|this|that)\s+(?:(?:bank|international|recent|last|latest|online)\s+)?(?:transfer|payment)"
    r"|(?:sent|send|sending|transferred|transferring|paid)\s+(?:(?:some|the|my)\s+)?(?:money|funds|cash))\b"
    r"(?!\s+(?:to|from|into|for|of|in)\b)",
    re.I,
)


def _recipient_into_query(query: str, family: str, vals: dict[str, str], rng: random.Random
                          ) -> tuple[str, dict[str, str]] | None:
    """The query with the recipient's name written where it names the person or the transfer, or None."""
    if "recipient" not in FAMILY_FIELDS[family]:
        return None
    name = vals["recipient"]
    if m := _PERSON.search(query):
        if m.group(2):  # "a friend" -> "my friend Kaleno" / "Kaleno"; "my mum" -> "my mum Kaleno"
            det = "my" if m.group(1).lower() == "a" else m.group(1)
            phrase = f"{det} {m.group(2)} {name}" if rng.random() < 0.7 else name
        else:  # "the recipient", "someone" -> the name
            phrase = name
    elif m := _TRANSFER_PHRASE.search(query):
        phrase = f"{m.group(0)} to {name}"
    else:
        return None
    return query[: m.start()] + phrase + query[m.end():], {"recipient": name}


def _with_query_details(query: str, family: str, vals: dict[str, str], rng: random.Random,
                        v: Variety) -> tuple[str, dict[str, str]]:
    # nothing is drawn for an option that is off, so data sets built without it come out unchanged
    used: dict[str, str] = {}
    # the name first, so that an amount can still go into "my transfer to Kaleno" ("my 19.99 transfer")
    if (v.recipients_in_query > 0 and rng.random() < v.recipients_in_query
            and (got := _recipient_into_query(query, family, vals, rng))):
        query, used = got
    if v.amounts_in_query > 0 and rng.random() < v.amounts_in_query:
        query, more = _amount_into_query(query, family, vals, rng, v.bare_amounts) or (query, {})
        used = {**used, **more}
    return query, used


def _fill(sentence: str, vals: dict[str, str], rng: random.Random, bare_amounts: float = 0.0) -> tuple[str, dict[str, str]]:
    """Fill one slot sentence; returns the text and the raw values it now contains."""
    used: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "amount":
            spelled, used["amount"] = _spell_amount(vals["amount"], vals["currency"], rng, bare_amounts)
            used["currency"] = vals["currency"]
            return spelled
        if key == "currency_name":
            used["currency"] = vals["currency"]
            return rng.choice((vals["currency"], *[n for n in CURRENCIES[vals["currency"]] if n.isalpha() and len(n) > 3]))
        used[key] = vals[key]
        return vals[key]

    return _SLOT.sub(sub, sentence), used


def extraction_example(query: str, intent: str, rng: random.Random, today: date, v: Variety = Variety()) -> dict:
    fam = FAMILY_OF[intent]
    vals = _slot_values(rng, today, v.open_names)
    query, used = _with_query_details(query, fam, vals, rng, v)
    r = rng.random()
    text = query
    sentences = _slot_sentences(fam, v.bare_amounts, used)
    if r < 0.8 and sentences:
        n = 1 if rng.random() < 0.6 else 2
        parts = []
        for s in rng.sample(sentences, min(n, len(sentences))):
            t, u = _fill(s, vals, rng, v.bare_amounts)
            parts.append(t)
            used.update(u)
        extra = " ".join(parts)
        text = f"{query} {extra}" if rng.random() < 0.75 else f"{extra} {query}"
    proc_fields = [f for f in PROCEDURES.get(intent, {}).get("extract", []) if f in FIELDS]
    if proc_fields and rng.random() < 0.6:
        fields = list(proc_fields)  # what the pipeline's procedure asks for this intent
    else:
        fields = list(FAMILY_FIELDS[fam])
        rng.shuffle(fields)
        fields = fields[: rng.randint(1, len(fields))]
    if rng.random() < 0.3:
        fields.append(rng.choice([f for f in FIELDS if f not in fields]))
    # the spelled amount may also carry the currency ("£12"); label what the text supports
    target: dict[str, str | None] = {}
    for f in fields:
        v = used.get(f)
        if f == "currency" and v is not None and not grounded("currency", v, text):
            v = None
        target[f] = v
    return {
        "task": "extract",
        "intent": intent,
        "text": text,
        "fields": fields,
        "prompt": prompts.extract_prompt(intent, text, fields),
        "completion": prompts.extract_completion(target),
        "expected": {f: normalize(f, v, today) for f, v in target.items()},
    }


# -- facts and replies ------------------------------------------------------------------------------
def _facts(fam: str, intent: str, used: dict[str, str], rng: random.Random, today: date) -> dict[str, str]:
    cur = used.get("currency") or rng.choice(("GBP", "EUR", "USD"))
    amount = normalize("amount", used["amount"]) if "amount" in used else normalize("amount", _money(rng))
    when = (normalize("date", used["date"], today) if "date" in used else None) or _date(rng, today).isoformat()
    f: dict[str, str] = {}
    pick = rng.random
    if fam == "card_payment":
        f["transaction_amount"] = f"{amount} {cur}"
        f["merchant"] = used.get("merchant") or rng.choice(MERCHANTS)
        f["transaction_date"] = when
        f["status"] = rng.choice(STATUSES)
        if "fee" in intent or "charge" in intent or pick() < 0.3:
            f["fee"] = f"{normalize('amount', _money(rng))} {cur}"
        if "refund" in intent.lower() or pick() < 0.2:
            f["refund_status"] = rng.choice(("issued", "pending", "not eligible", "awaiting approval"))
        if "exchange" in intent:
            f["exchange_rate"] = f"{rng.uniform(0.5, 1.9):.4f}"
    elif fam == "cash":
        f["withdrawal_amount"] = f"{amount} {cur}"
        f["country"] = used.get("country") or rng.choice(COUNTRIES)
        f["withdrawal_date"] = when
        f["status"] = rng.choice(STATUSES)
        if "charge" in intent or pick() < 0.4:
            f["atm_fee"] = f"{normalize('amount', _money(rng))} {cur}"
        if pick() < 0.4:
            f["free_withdrawals_left"] = str(rng.randint(0, 5))
    elif fam == "transfer":
        f["transfer_amount"] = f"{amount} {cur}"
        f["recipient"] = used.get("recipient") or f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        f["transfer_date"] = when
        f["transfer_status"] = rng.choice(STATUSES)
        if used.get("transfer_reference") or pick() < 0.5:
            f["reference"] = (used.get("transfer_reference") or f"TR{rng.randint(10000, 9999999)}").upper()
        if "fee" in intent or pick() < 0.3:
            f["transfer_fee"] = f"{normalize('amount', _money(rng))} {cur}"
        if pick() < 0.4:
            f["expected_arrival"] = (today + timedelta(days=rng.randint(0, 5))).isoformat()
    elif fam == "top_up":
        f["top_up_amount"] = f"{amount} {cur}"
        f["top_up_date"] = when
        f["top_up_status"] = rng.choice(STATUSES)
        if "charge" in intent or pick() < 0.4:
            f["top_up_fee"] = f"{normalize('amount', _money(rng))} {cur}"
        if "limit" in intent or pick() < 0.3:
            f["top_up_limit"] = f"{rng.choice((500, 1000, 2500, 5000, 10000))}.00 {cur}"
    elif fam == "card":
        f["card"] = f"ending {used.get('card_last4') or f'{rng.randint(0, 9999):04d}'}"
        f["card_status"] = rng.choice(CARD_STATUSES)
        if pick() < 0.5:
            f["incident"] = rng.choice(INCIDENTS)
        f["next_step"] = rng.choice(NEXT_STEPS)
        if "arrival" in intent or "delivery" in intent or "expire" in intent or pick() < 0.2:
            f["estimated_delivery"] = (today + timedelta(days=rng.randint(1, 14))).isoformat()
    elif fam == "product":
        product = normalize("product", used["product"]) if "product" in used else rng.choice(PRODUCTS)
        f["product"] = product
        f["price"] = f"{rng.choice(('0.00', '4.99', '7.99', '9.99', '14.99', '5.00'))} {cur} per month"
        if pick() < 0.5:
            f["card_network"] = rng.choice(("Visa", "Mastercard"))
        if "country" in used or pick() < 0.4:
            f["country"] = used.get("country") or rng.choice(COUNTRIES)
            f["supported"] = rng.choice(("yes", "no"))
        if "limit" in intent or pick() < 0.3:
            f["spending_limit"] = f"{rng.choice((250, 1000, 3000, 5000))}.00 {cur}"
        if "age" in intent:
            f["minimum_age"] = str(rng.choice((16, 18)))
        if "currenc" in intent or "exchange" in intent or pick() < 0.2:
            f["currencies"] = ", ".join(rng.sample(sorted(CURRENCIES), 3))
    else:
        f["verification_status"] = rng.choice(("verified", "pending review", "documents needed", "failed"))
        f["next_step"] = rng.choice(NEXT_STEPS)
        if pick() < 0.5:
            f["submitted_on"] = when
        if "terminate" in intent and pick() < 0.7:
            f["closing_balance"] = f"{amount} {cur}"
    items = list(f.items())
    if pick() < 0.3 and len(items) > 2:
        rng.shuffle(items)
    return dict(items)


def fact_sentence(key: str, value: str, rng: random.Random) -> str:
    return rng.choice(fact_sentences(key, value))


def reply_text(customer_name: str, intent: str, facts: dict[str, str], rng: random.Random) -> str:
    first = customer_name.split()[0]
    parts = [rng.choice(openings(first, intent_topic(intent)))]
    stated: set[str] = set()
    for k, v in facts.items():
        if v.lower() not in stated:  # two facts from one tool often repeat a sentence; say it once
            parts.append(fact_sentence(k, v, rng))
            stated.add(v.lower())
    parts.append(rng.choice(CLOSERS))
    return " ".join(parts)


def reply_example(query: str, intent: str, rng: random.Random, today: date, v: Variety = Variety()) -> dict:
    fam = FAMILY_OF[intent]
    vals = _slot_values(rng, today, v.open_names)
    query, used = _with_query_details(query, fam, vals, rng, v)
    text = query
    sentences = _slot_sentences(fam, v.bare_amounts, used)
    if rng.random() < 0.7 and sentences:
        t, more = _fill(rng.choice(sentences), vals, rng, v.bare_amounts)
        used = {**used, **more}
        text = f"{query} {t}"
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    proc = PROCEDURES.get(intent)
    if proc and proc.get("facts") and rng.random() < 0.8:
        facts = procedure_facts(proc, World(intent, used, rng, today, BANK, MERCHANTS), rng)
    else:
        facts = _facts(fam, intent, used, rng, today)
    reply = reply_text(name, intent, facts, rng)
    problems = faithfulness_problems(reply, facts, customer_name=name, intent=intent)
    if problems:  # a generator bug, not data: the targets must be faithful by construction
        raise AssertionError(f"unfaithful target {reply!r}: {problems}")
    return {
        "task": "reply",
        "intent": intent,
        "customer_name": name,
        "facts": facts,
        "text": text,
        "prompt": prompts.reply_prompt(name, intent, facts, text),
        "completion": prompts.reply_completion(reply),
    }


def build(rows: list[tuple[str, str]], *, seed: int, per_query: float, today: date, **variety: float) -> list[dict]:
    """Examples over (query, intent) rows: extraction and reply examples, about ``per_query`` each;
    ``variety``: the shares of ``Variety``'s optional variations."""
    v = Variety(**variety)
    rng = random.Random(seed)
    out: list[dict] = []
    for text, intent in rows:
        if intent not in FAMILY_OF or not safe_query(text):
            continue
        n = int(per_query) + (rng.random() < per_query - int(per_query))
        for _ in range(n):
            out.append(extraction_example(text, intent, rng, today, v))
            out.append(reply_example(text, intent, rng, today, v))
    rng.shuffle(out)
    return out


def _write(path: Path, examples: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    from moe_engine.data.banking77 import load_splits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-query", type=float, default=1.0)
    ap.add_argument("--bare-amounts", type=float, default=0.0,
                    help="share of amounts written without a currency, with noun-phrase slot sentences (0: off)")
    ap.add_argument("--amounts-in-query", type=float, default=0.0,
                    help="share of examples whose query gets the amount in its own noun phrase, "
                         "'the 19.99 payment' (0: off)")
    ap.add_argument("--open-names", type=float, default=0.0,
                    help="share of recipients given a made-up name instead of one from the name lists (0: off)")
    ap.add_argument("--recipients-in-query", type=float, default=0.0,
                    help="share of examples whose query gets the recipient's name where it names the person "
                         "or the transfer, 'my friend Kaleno', 'my transfer to Kaleno' (0: off)")
    ap.add_argument("--family", choices=sorted(FAMILY_FIELDS), default=None,
                    help="only the queries of this intent family (extra examples for a field that is rare)")
    ap.add_argument("--today", default="2026-11-23", help="reference day for dates without a year")
    a = ap.parse_args(argv)
    today = date.fromisoformat(a.today)
    train, val = load_splits()
    if a.family:
        train, val = ([r for r in rows if FAMILY_OF.get(r[1]) == a.family] for rows in (train, val))
    a.out.mkdir(parents=True, exist_ok=True)
    opts = {"bare_amounts": a.bare_amounts, "amounts_in_query": a.amounts_in_query,
            "open_names": a.open_names, "recipients_in_query": a.recipients_in_query}
    tr = build(train, seed=a.seed, per_query=a.per_query, today=today, **opts)
    va = build(val, seed=a.seed + 1000, per_query=0.5, today=today, **opts)
    _write(a.out / "train.jsonl", tr)
    _write(a.out / "validation.jsonl", va)
    print(f"wrote {len(tr)} train and {len(va)} validation examples to {a.out}")


if __name__ == "__main__":
    main()

