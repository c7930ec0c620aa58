"""Ticket details for router training: what real tickets carry and Banking77's queries do not.

Banking77's queries are bare problem statements ("I was charged twice"). Tickets that reach the
router also hold amounts, merchants, dates, card digits, references, greetings and signatures, and
none of these decide the intent. ``add_details`` writes such details into a query (the amount into
its own noun phrase where it names a payment, detail sentences before or after it) so a router can
be trained to read past them; the label does not change.
"""
from __future__ import annotations

import random
import re

# a payment named by a noun with a determiner: where an amount can go ("the 19.99 payment",
# "a payment of 19.99"); the agent-model data generator uses the same pattern
PAYMENT_NOUN = re.compile(
    r"\b(a|an|the|my|this|that)\s+(payment|charge|transaction|transfer|withdrawal|top[- ]?up|refund|purchase|deposit)\b",
    re.I,
)


def amount_in_payment_noun(text: str, match: re.Match[str], amount: str, rng: random.Random) -> str:
    """``text`` with ``amount`` written into the payment noun phrase ``match`` (of ``PAYMENT_NOUN``):
    "the 19.99 payment" or "the payment of 19.99" (always the latter after "a"/"an")."""
    det, noun = match.groups()
    before = det.lower() not in ("a", "an") and rng.random() < 0.5
    phrase = f"{det} {amount} {noun}" if before else f"{det} {noun} of {amount}"
    return text[: match.start()] + phrase + text[match.end():]


_MERCHANTS = ("Tesco", "Amazon", "Uber", "Netflix", "Zara", "Lidl", "Starbucks", "Apple", "IKEA", "Shell",
              "Ryanair", "Deliveroo", "eBay", "Boots", "Aldi")
_COUNTRIES = ("Spain", "France", "the US", "Germany", "Italy", "Poland", "Japan", "Portugal", "Mexico")
_NAMES = ("Jane", "Tom", "Amir", "Li Wei", "Maria", "Olu", "Sam Patel", "Ana", "J. Smith")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_SENTENCES = (
    "My card ends in {card}.", "Card ending {card}.", "It was {amount}.", "The amount was {amount}.",
    "It was {amount} at {merchant}.", "{merchant}, {amount}.", "This was on {day}.", "It happened {when}.",
    "Reference {ref}.", "I'm in {country} at the moment.", "My account is under {name}.",
)
_OPENERS = ("Hi,", "Hello,", "Hi there.", "Good morning,", "Dear support,")
_CLOSERS = ("Thanks, {name}", "Kind regards, {name}", "Thank you.", "Sent from my phone", "Cheers")


def _amount(rng: random.Random) -> str:
    value = rng.choice((rng.randint(1, 99), rng.randint(100, 2500))) + rng.choice((0, rng.randint(1, 99) / 100))
    number = f"{value:,.2f}" if value >= 1000 and rng.random() < 0.5 else f"{value:.2f}"
    if rng.random() < 0.25 and value == int(value):
        number = f"{int(value)}"
    style = rng.random()
    if style < 0.35:
        return number
    if style < 0.7:
        return rng.choice("£€$") + number
    return f"{number} {rng.choice(('GBP', 'EUR', 'USD', 'euros', 'pounds'))}"


def _day(rng: random.Random) -> str:
    day, month = rng.randint(1, 28), rng.randrange(12)
    return rng.choice((f"{day} {_MONTHS[month]}", f"{_MONTHS[month]} {day}", f"2026-{month + 1:02d}-{day:02d}",
                       f"{day:02d}/{month + 1:02d}/2026"))


def _fill(template: str, rng: random.Random) -> str:
    values = {"card": f"{rng.randint(0, 9999):04d}", "amount": _amount(rng), "merchant": rng.choice(_MERCHANTS),
              "day": _day(rng),
              "when": rng.choice(("yesterday", "last Friday", "on Monday", "last week", "on " + _day(rng))), "ref": rng.choice(("TR", "REF", "")) + str(rng.randint(10000, 99999999)),
              "country": rng.choice(_COUNTRIES), "name": rng.choice(_NAMES)}
    return template.format(**values)


def add_details(text: str, rng: random.Random) -> str:
    """``text`` with one to three ticket details written in; its intent is unchanged."""
    if (m := PAYMENT_NOUN.search(text)) and rng.random() < 0.5:
        text = amount_in_payment_noun(text, m, _amount(rng), rng)
        if rng.random() < 0.5:
            return text
    for template in rng.sample(_SENTENCES, 1 if rng.random() < 0.7 else 2):
        sentence = _fill(template, rng)
        text = f"{text} {sentence}" if rng.random() < 0.7 else f"{sentence} {text}"
    if rng.random() < 0.2:
        text = f"{rng.choice(_OPENERS)} {text}"
    if rng.random() < 0.2:
        text = f"{text} {_fill(rng.choice(_CLOSERS), rng)}"
    return text
