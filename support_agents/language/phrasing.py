"""How a reply is phrased: an opening, one sentence per fact, a closing.

The agent model learns replies built only from these (``synth.reply_text``), and
``faithfulness.unsupported_sentences`` accepts a reply only when it is made of them: a sentence the
facts do not support ("Its current status is pending." when the status is rejected, another
intent's knowledge-base answer) is caught even when every number and currency in it is right.
"""
from __future__ import annotations

OPENERS = (
    "Hi {first}, thanks for getting in touch about {topic}.",
    "Hello {first}, thank you for your message about {topic}.",
    "Dear {first}, thanks for contacting us about {topic}.",
    "Hi {first}, I have looked into {topic} for you.",
    "Hello {first}, sorry for the trouble with {topic}.",
)
CLOSERS = (
    "Let us know if there is anything else we can help with.",
    "Reply here if you have any other questions.",
    "We are happy to help further if needed.",
    "Thanks for your patience.",
    "Kind regards, the support team.",
)
# phrasing per kind of fact key; {v} is the fact value copied verbatim, {k} the key in words.
# Keep the number of phrasings of a key when rewording it: synth draws one with its random stream, so
# another count would change every example drawn after it (and the held-out set with them).
KEY_PHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # sentences from tools (KB answers, fee rules, incident notes) are quoted verbatim
    ("answer", ("{s}",)),
    ("fee_rule", ("{s}",)),
    ("fee_explained", ("{s}",)),
    ("incident_update", ("{s}", "Update: {s}")),
    ("identity_note", ("Note: {s}", "Reason: {s}")),
    ("_problem", ("We could not complete this: {s}", "There was a problem: {s}")),
    ("_decision", ("We could not complete this: {s}", "Decision: {s}")),
    # keys a broader needle below would phrase wrongly ("You can go up to Travel insurance.")
    ("=limit_name", ("This is the {v} limit.", "The limit in question is the {v} limit.")),
    ("=limit_product", ("This is about the {v}.", "The product is the {v}.")),
    ("=refund_amount", ("The refund amount is {v}.", "Your refund is {v}.")),
    ("=refund_expected", ("Expected refund time: {v}.", "The refund should arrive within {v}.")),
    ("=card_network", ("The card network is {v}.", "Your card runs on {v}.")),
    ("=delivery_country", ("Delivery country: {v}.", "It is being delivered to {v}.")),
    ("=delivery_days", ("Delivery takes {v} days.", "Delivery days: {v}.")),
    ("=free_withdrawals_left", ("Free withdrawals left: {v}.", "You have {v} free withdrawals left.",
                                "Free withdrawals remaining: {v}.")),
    ("=incident_status", ("Incident status: {v}.", "The incident status is {v}.", "Status of the incident: {v}.")),
    ("fee_name", ("This is the {v}.", "The fee in question is the {v}.")),
    ("=transaction", ("The transaction reference is {v}.", "We found transaction {v}.")),
    ("min_age", ("The minimum age is {v}.",)),
    ("_type", ("The {k} is {v}.",)),
    ("_kind", ("The {k} is {v}.",)),
    ("_days", ("The {k} is {v}.", "{K}: {v}.")),
    ("_supported", ("{K}: {v}.",)),
    ("products", ("Our products: {v}.",)),
    ("currencies", ("Supported currencies: {v}.",)),
    ("countries", ("Supported countries: {v}.",)),
    ("charged_fee", ("You were charged {v}.", "The charged fee was {v}.")),
    ("fee", ("The {k} is {v}.", "{K}: {v}.")),
    ("refund", ("The refund status is {v}.", "Your refund is {v}.")),
    ("amount", ("The amount is {v}.", "This concerns {v}.", "We can see the {k} of {v}.")),
    ("balance", ("Your {k} is {v}.",)),
    ("limit", ("The {k} is {v}.", "You can go up to {v}.")),
    ("price", ("It costs {v}.", "The price is {v}.")),
    ("merchant", ("The payment went to {v}.", "The merchant was {v}.")),
    ("recipient", ("It was sent to {v}.", "The recipient is {v}.")),
    ("date", ("This was on {v}.", "The {k} is {v}.")),
    ("arrival", ("It should arrive by {v}.", "The {k} is {v}.")),
    ("delivery", ("Expected delivery is {v}.", "It should reach you by {v}.")),
    ("submitted", ("You submitted it on {v}.",)),
    ("status", ("Its current status is {v}.", "The {k} is {v}.", "Right now it is {v}.")),
    ("next_step", ("Next, please {v}.", "The next step is to {v}.")),
    ("incident", ("Service note: {v}.", "Current incident: {v}.")),
    ("product", ("This is about the {v}.", "The product is the {v}.")),
    ("card", ("This is your card {v}.", "We checked the card {v}.")),
    ("reference", ("The reference is {v}.",)),
    ("country", ("Country: {v}.", "The country is {v}.")),
    ("supported", ("Supported: {v}.",)),
    ("rate", ("The rate applied was {v}.",)),
)
VERBATIM_SHORT = ("The {k} is {v}.", "{K}: {v}.")
GENERIC = ("The {k} is {v}.", "{K}: {v}.", "We can confirm the {k} is {v}.")


def fact_sentences(key: str, value: str) -> tuple[str, ...]:
    """Every way a reply may state the fact ``key = value``."""
    words = key.replace("_", " ")
    sentence = value.strip().rstrip(".") + "."
    options = GENERIC
    for needle, phrases in KEY_PHRASES:
        if (needle[1:] == key) if needle.startswith("=") else (needle in key):
            options = phrases
            break
    if options == ("{s}",) and len(value.split()) < 3:
        # a tool's rule may be a bare figure ("0.5%"), not a sentence to quote
        options = VERBATIM_SHORT
    return tuple(o.format(v=value, s=sentence, k=words, K=words.capitalize()) for o in options)


def openings(first: str, topic: str) -> tuple[str, ...]:
    """Every opening sentence for a customer greeted as ``first`` about ``topic`` ("Dear there" is not
    a greeting: a customer without a name on file gets "Hi there" or "Hello there")."""
    return tuple(o.format(first=first, topic=topic) for o in OPENERS if first != "there" or not o.startswith("Dear"))
