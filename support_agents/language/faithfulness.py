"""Checks that a written reply states nothing the procedure's facts do not support.

"Every amount, date, fee and product named in the reply comes from the facts": we find every
number, money amount, date, currency and product name in the reply and look each up among the
fact values (and the customer's name). Anything left over is a problem; one problem is enough for
the pipeline to discard the model's text and use the deterministic template.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from moe_engine.data.banking77 import queues

from .fields import CURRENCIES, DATE_PATTERNS, PRODUCTS, normalize_date
from .phrasing import CLOSERS, fact_sentences, openings

_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")
_NUMBER_WORDS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "fifteen", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million",
)
_CODE = re.compile(r"\b(" + "|".join(CURRENCIES) + r")\b")
# "Hi Alice," / "Dear Mr Khan": the word after the salutation is whom the reply addresses.
_GREETING = re.compile(r"^(\s*(?:Hi|Hello|Hey|Dear)\s+)([A-Z][\w'’-]*)(?=[\s,.!:;]|$)")
_SYMBOLS = {"£": "GBP", "€": "EUR", "$": "USD", "¥": "JPY"}
_FIRST_SENTENCE = re.compile(r"^[^.!?\n]*")
# the end of a sentence: not the point inside "1.50" or "Cards > Order.x"
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _num(s: str) -> Decimal | None:
    try:
        return Decimal(s.replace(",", ""))
    except InvalidOperation:
        return None


def _dates(text: str) -> list[tuple[tuple[int, int], str | None]]:
    """(span, iso) for every date in text; iso is None when it is not a real calendar day."""
    found: list[tuple[tuple[int, int], str | None]] = []
    for pat in DATE_PATTERNS:
        for m in pat.finditer(text):
            if any(s <= m.start() < e for (s, e), _ in found):
                continue
            found.append((m.span(), normalize_date(m.group(0))))
    return found


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for s, e in spans:
        chars[s:e] = " " * (e - s)
    return "".join(chars)


def greeting_name(customer_name: str) -> str:
    """Whom a reply greets: the customer's first name on file, or "there" when there is none."""
    return customer_name.split()[0] if customer_name.strip() else "there"


def with_greeting_name(reply: str, customer_name: str) -> str:
    """The reply greeting the customer by the name on file. The model has only seen named customers,
    so for a customer without a name it makes one up ("Hi Dmitri,"); a wrong name is replaced,
    never guessed."""
    return _GREETING.sub(lambda m: m.group(1) + greeting_name(customer_name), reply, count=1)


def intent_topic(intent: str) -> str:
    """How a reply names the ticket's intent in its opening: "Refund_not_showing_up" -> "refund not showing up"."""
    return intent.replace("_", " ").rstrip("?").lower()


@lru_cache(maxsize=1)
def _known_topics() -> tuple[str, ...]:
    # longest first, so "card payment wrong exchange rate" wins over the "exchange rate" inside it
    return tuple(sorted({intent_topic(i) for i in queues()}, key=len, reverse=True))


def opening_topic(reply: str) -> tuple[str, tuple[int, int]] | None:
    """The intent topic the reply's first sentence names ("… sorry for the trouble with card arrival."),
    with its span; None when it names none we know."""
    opening = _FIRST_SENTENCE.match(reply).group(0).lower()
    for topic in _known_topics():
        m = re.search(rf"\b{re.escape(topic)}\b", opening)
        if m:
            return topic, m.span()
    return None


def with_intent_topic(reply: str, intent: str) -> str:
    """The reply opening on the ticket's own topic. The small model sometimes names a neighbouring
    intent's topic ("the trouble with refund not showing up" on an extra-charge ticket) while the
    facts below are right; the wrong topic is replaced, never left in."""
    named = opening_topic(reply)
    ours = intent_topic(intent)
    if named is None or named[0] == ours:
        return reply
    start, end = named[1]
    return reply[:start] + ours + reply[end:]


def unsupported_sentences(reply: str, facts: Mapping[str, str], *, customer_name: str, intent: str) -> list[str]:
    """The stretches of ``reply`` that are not the opening, a statement of one of the facts (in one of
    the phrasings of ``phrasing``) or a closing, and fact sentences said twice.

    The atom checks of ``faithfulness_problems`` cannot see a wrong word ("per month" for "per
    payment", "pending" for "rejected") or a sentence that belongs to another ticket; this can.
    """
    stated = {s for k, v in facts.items() for s in fact_sentences(k, v)}
    # longest first: "The fee is 1.50 GBP." must not stop a longer sentence that starts the same way
    candidates = sorted({*openings(greeting_name(customer_name), intent_topic(intent)), *CLOSERS, *stated},
                        key=len, reverse=True)
    problems: list[str] = []
    said: set[str] = set()
    text, i = reply.strip(), 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        found = next((c for c in candidates if text.startswith(c, i)), None)
        if found is None:
            # the unsupported stretch runs to its sentence end or to where a known sentence starts
            end = _SENTENCE_END.search(text, i)
            stop = end.end() if end else len(text)
            stop = next((j for j in range(i + 1, stop) if text[j - 1].isspace()
                         and any(text.startswith(c, j) for c in candidates)), stop)
            problems.append(f"not from the facts: {text[i:stop].strip()!r}")
            i = stop
            continue
        if found in said and found in stated:
            problems.append(f"says twice: {found!r}")
        said.add(found)
        i += len(found)
    return problems


def faithfulness_problems(
    reply: str,
    facts: Mapping[str, str],
    *,
    customer_name: str = "",
    products: Iterable[str] = PRODUCTS,
    intent: str | None = None,
) -> list[str]:
    """Every amount, number, date, currency or product in ``reply`` that the facts do not contain,
    a greeting that names anyone but the customer and, given the ticket's ``intent``, an opening that
    names another intent's topic and any sentence that is not an opening, closing or statement of a
    fact (``unsupported_sentences``)."""
    fact_text = " ".join(str(v) for v in facts.values()) + " " + customer_name
    fact_low = fact_text.lower()
    problems: list[str] = []

    fact_dates = {iso for _, iso in _dates(fact_text) if iso}
    reply_dates = _dates(reply)
    for (s, e), iso in reply_dates:
        if iso is None or iso not in fact_dates:
            problems.append(f"date not in facts: {reply[s:e]!r}")
    # the day and year digits of a date are checked as the date, not as loose numbers
    rest = _mask(reply, (span for span, _ in reply_dates))
    fact_rest = _mask(fact_text, (span for span, _ in _dates(fact_text)))

    fact_numbers = {n for n in (_num(m.group(0)) for m in _NUMBER.finditer(fact_rest)) if n is not None}
    fact_numbers |= {n for n in (_num(m.group(0)) for m in _NUMBER.finditer(fact_text)) if n is not None}
    for m in _NUMBER.finditer(rest):
        n = _num(m.group(0))
        if n is None or n not in fact_numbers:
            problems.append(f"number not in facts: {m.group(0)!r}")
    for w in _NUMBER_WORDS:
        if re.search(rf"\b{w}\b", rest, re.I) and not re.search(rf"\b{w}\b", fact_low):
            problems.append(f"number not in facts: {w!r}")

    fact_codes = set(_CODE.findall(fact_text.upper())) | {c for s, c in _SYMBOLS.items() if s in fact_text}
    for code in _CODE.findall(reply):
        if code not in fact_codes:
            problems.append(f"currency not in facts: {code!r}")
    for sym, code in _SYMBOLS.items():
        if sym in reply and code not in fact_codes:
            problems.append(f"currency not in facts: {sym!r}")

    greeted = _GREETING.match(reply)
    if greeted and greeted.group(2) not in (greeting_name(customer_name), "there"):
        problems.append(f"greets someone else: {greeted.group(2)!r}")
    if intent is not None:
        named = opening_topic(reply)
        if named and named[0] != intent_topic(intent):
            problems.append(f"opens on another topic: {named[0]!r}")
        problems += unsupported_sentences(reply, facts, customer_name=customer_name, intent=intent)

    for p in products:
        # case-sensitive: "Metal card" is the product, "your metal card" is the customer's card
        if re.search(rf"\b{re.escape(p)}\b", reply) and p.lower() not in fact_low:
            problems.append(f"product not in facts: {p!r}")
    return problems


def missing_facts(text: str, facts: Mapping[str, str], must_state: list[str] | None = None) -> list[str]:
    """Facts the reply leaves out. A faithful reply that says nothing useful is not good enough:
    by default it must state at least one fact and most of the figures (amounts, dates, refs)."""
    low = text.lower()
    if must_state is not None:
        return [k for k in must_state if k in facts and facts[k].lower() not in low]
    if not facts:
        return []
    present = [k for k, v in facts.items() if v.lower() in low]
    figures = [k for k, v in facts.items() if any(ch.isdigit() for ch in v)]
    missing = [k for k in figures if k not in present]
    if not present:
        return list(facts)[:1]
    return missing if len(missing) * 2 > len(figures) else []
