"""Constrained decoding for the agent model: grounded extraction values and faithful replies.

The engine asks a request's constraint, once per decode step, which token ids may come next
(``moe_engine.generate.TokenConstraint``). Here the rules live:

* ``ExtractionConstraint`` forces the JSON skeleton ``{"f1": V, "f2": V}`` in the requested field
  order; each V is ``null`` or a quoted value from a small candidate set per field: spans of the
  customer's cleaned text (1-4 words) that ``normalize`` accepts for that field and ``grounded``
  supports, so the model can only choose, never invent. (Currency may also be the ISO code, the form
  the model was trained to write, when the text names that currency.)
* ``SentenceConstraint`` keeps a reply to the sentences of ``phrasing``: the opening for this
  customer and topic, each fact once in one of its phrasings, then a closing, and no closing or end
  before every fact is stated. The model chooses order and phrasing; it cannot write a sentence the
  facts do not support, repeat one or leave a fact out. (An earlier constraint only kept numbers,
  dates, currencies and products to the facts: a third of the replies it let through said
  something else wrong, "per month" for "per payment", another intent's answer.)

The vocabulary is byte-level BPE: each token's bytes are computed once per tokenizer (``Vocab``),
and both constraints walk a byte trie of the vocabulary along the bytes the grammar allows, so a step
costs what the few valid continuations cost, not the 4,096 tokens.
"""
from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from . import prompts
from .faithfulness import greeting_name, intent_topic
from .fields import CURRENCIES, DATE_PATTERNS, grounded, normalize
from .phrasing import CLOSERS, fact_sentences, openings


# -- the vocabulary as bytes --------------------------------------------------------------------------
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: ByteLevel token strings back to bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class _Node:
    __slots__ = ("children", "ids")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.ids: list[int] = []


class Vocab:
    """Per-tokenizer tables: the bytes of every token and a byte trie over them (built once)."""

    def __init__(self, tokenizer: Any, vocab_size: int | None = None):
        inner = tokenizer.tok
        special = {t.content for t in inner.get_added_tokens_decoder().values()}
        dec = _byte_decoder()
        self.size = vocab_size or inner.get_vocab_size()
        self.bytes: list[bytes | None] = [None] * self.size
        for s, i in inner.get_vocab().items():
            if i < self.size and s not in special:
                self.bytes[i] = bytes(dec[c] for c in s)
        self.end_id = inner.token_to_id(prompts.END)
        self.root = _Node()
        for i, b in enumerate(self.bytes):
            if not b:
                continue
            node = self.root
            for c in b:
                node = node.children.setdefault(c, _Node())
            node.ids.append(i)


_VOCABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_VOCABS_LOCK = threading.Lock()


def vocab_for(tokenizer: Any, vocab_size: int | None = None) -> Vocab:
    """The tokenizer's ``Vocab``, built on first use and kept while the tokenizer lives."""
    with _VOCABS_LOCK:
        v = _VOCABS.get(tokenizer)
        if v is None or (vocab_size and v.size != vocab_size):
            v = _VOCABS[tokenizer] = Vocab(tokenizer, vocab_size)
        return v


# -- extraction --------------------------------------------------------------------------------------
_LEAD = "([{\"'£€$¥"
_TRAIL = ".,;:!?)]}\"'"
_MAX_WORDS = {"amount": 1, "card_last4": 1, "transfer_reference": 1, "currency": 2, "country": 3, "date": 4,
              "merchant": 4, "recipient": 3, "product": 3}


def text_spans(text: str, max_words: int) -> set[tuple[int, int]]:
    """(start, end) of every run of 1..max_words whole words, each with and without edge punctuation."""
    words = [m.span() for m in re.finditer(r"\S+", text)]
    starts, ends = [], []
    for s, e in words:
        ss, ee = {s}, {e}
        while s < e - 1 and text[s] in _LEAD:
            s += 1
            ss.add(s)
        while e > s + 1 and text[e - 1] in _TRAIL:
            e -= 1
            ee.add(e)
        starts.append(ss)
        ends.append(ee)
    out = set()
    for i in range(len(words)):
        for j in range(i, min(i + max_words, len(words))):
            out.update((s, e) for s in starts[i] for e in ends[j] if e > s)
    return out


# a number right after these words identifies a card (or a transfer): it is not an amount or reference
_CARD_BEFORE = re.compile(r"\b(card|ending|ending in|ends in)\W*$", re.I)
_ID_BEFORE = re.compile(r"\b(card|ending|ending in|ends in|number|reference|ref|reference number)\W*$", re.I)
# capitalised words that start sentences and questions, never a person, country or merchant
_NOT_NAMES = frozenset((
    "a", "an", "and", "are", "as", "at", "but", "by", "can", "could", "do", "does", "did", "for", "from",
    "had", "has", "have", "hello", "hi", "how", "i", "i'm", "if", "in", "is", "it", "it's", "my", "no",
    "not", "of", "on", "or", "our", "please", "so", "that", "the", "there", "this", "to", "was", "we",
    "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "yes", "you", "your",
    "thanks", "thank", "dear", "card", "transfer", "payment", "account", "refund", "money", "atm", "app",
    "bank", "ok", "also", "after", "before", "today", "yesterday", "sorry", "help", "need", "just", "still",
    "since", "then", "now", "one", "some", "any", "all", "hey", "good", "morning", "why's", "where's",
    # a ticket's capitalised days and months, and the verbs that open one ("Sent 85.50 to …"), are
    # not the names of people, shops or countries
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "january", "february", "march", "april", "june", "july", "august", "september", "october",
    "november", "december",
    "sent", "send", "sending", "paid", "pay", "tried", "transferred", "received", "got", "cancel", "stop",
))


def _name_like(text: str, s: int, e: int, *, merchant: bool = False) -> bool:
    """A whole run of capitalised words (a name, a country, a shop), not a piece of one, not a sentence
    opener, with no sentence punctuation inside or at its end."""
    words = text[s:e].split()

    def cap(w: str) -> bool:
        return w[0].isupper() or (merchant and any(c.isupper() for c in w))  # "eBay"

    if not all(cap(w) for w in words) or words[0].lower() in _NOT_NAMES:
        return False
    if re.search(r"[.,;:!?]$", text[s:e]) or any(re.search(r"[,;:!?]$|[a-z]\.$", w) for w in words[:-1]):
        return False
    if text[s - 1 : s].isalnum() or text[e : e + 1].isalnum():
        return False  # cut inside a word
    before = re.search(r"(\S+)\s+$", text[:s])
    if before is not None and not re.search(r"[.,;:!?)]$", before.group(1)) and cap(before.group(1)) \
            and before.group(1).lower() not in _NOT_NAMES:
        return False  # "Haddad" of "Luca Haddad"
    after = re.match(r"\s+(\S+)", text[e:])
    return not (after is not None and text[e:e + 1].isspace() and cap(after.group(1))
                and after.group(1).lower().strip(_TRAIL) not in _NOT_NAMES)


def _looks_like_reference(field: str, words: list[str]) -> bool:
    """People and countries have no digits; a merchant may have a few ("7-Eleven"), a reference has many."""
    if field == "merchant":
        return any(sum(ch.isdigit() for ch in word) >= 3 for word in words)
    return any(ch.isdigit() for word in words for ch in word)


def _plausible(field: str, text: str, s: int, e: int, dates: list[tuple[int, int]]) -> bool:
    """Cheap well-formedness beyond ``normalize``: what a value of this field looks like in context."""
    value = text[s:e]
    if field != "date" and any(ds <= s and e <= de for ds, de in dates):
        return False  # the day or year of a date is not an amount, card or name
    if field == "amount":  # "card ending 7583", "reference 57053957" are not amounts
        return not _ID_BEFORE.search(text[:s])
    if field == "card_last4":
        return not (s and text[s - 1] in _LEAD) and not re.match(r"[.,]\d", text[e:])
    if field == "transfer_reference":
        # references carry digits ("need" is not one) and are not the card's last digits
        return re.search(r"\d", value) is not None and not _CARD_BEFORE.search(text[:s])
    if field in ("merchant", "recipient", "country"):
        words = value.split()
        if any(normalize("currency", w.strip(_TRAIL)) is not None for w in words):
            return False  # "CHF", "euros": a currency, not a name
        if _looks_like_reference(field, words):
            return False  # "PAY23185672" is a reference, not a name
        return _name_like(text, s, e, merchant=field == "merchant")  # proper names, as customers write them
    return True


def value_candidates(field: str, text: str, today: date | None = None) -> set[str]:
    """Values the extractor may write for ``field``: spans of ``text`` valid and grounded for it."""
    dates = [m.span() for pat in DATE_PATTERNS for m in pat.finditer(text)]
    out = set()
    for s, e in text_spans(text, _MAX_WORDS.get(field, 3)):
        v = text[s:e]
        if '"' in v or "\\" in v or len(v) > 60 or v in out:
            continue  # JSON escapes would break the copy
        if _plausible(field, text, s, e, dates) and normalize(field, v, today) is not None and grounded(field, v, text):
            out.add(v)
    if field == "currency":  # the trained output form is the ISO code
        out |= {c for c in CURRENCIES if grounded("currency", c, text)}
    return out


class _Slot:
    """One value position: ``null`` or ``"<candidate>"``, as a table of allowed next bytes per prefix."""

    def __init__(self, candidates: Iterable[str]):
        self.complete = {c.encode() for c in candidates}
        self.nexts: dict[bytes, set[int]] = {}
        for c in self.complete:
            for k in range(len(c)):
                self.nexts.setdefault(c[:k], set()).add(c[k])


_NULL = b"null"
_QUOTE = ord('"')


class _ByteGrammar:
    """A constraint whose state moves byte by byte through the tokens generated so far; ``state`` is
    None once they left the grammar. Subclasses give ``_advance(state, byte)`` (a falsy result ends
    the walk) and ``_after_special(token)``."""

    vocab: Vocab
    state: Any
    seen: int

    def _consume(self, generated: Sequence[int]) -> None:
        for t in generated[self.seen :]:
            if self.state is None:
                break
            b = self.vocab.bytes[t] if 0 <= t < self.vocab.size else None
            if b is None:
                self.state = self._after_special(t)
                continue
            for c in b:
                self.state = self._advance(self.state, c) or None
                if self.state is None:
                    break
        self.seen = len(generated)


class ExtractionConstraint(_ByteGrammar):
    """Forces ``{"f1": V, ...}<|end|>`` with each V ``null`` or one of the field's candidates.

    The state is deterministic in the bytes written so far: (segment, kind, data) where a segment is
    a literal piece of the skeleton or a value slot. ``allowed`` consumes new tokens, then walks the
    vocabulary trie along the bytes the grammar allows from the current state.
    """

    def __init__(self, vocab: Vocab, text: str, fields: Sequence[str], today: date | None = None):
        self.vocab = vocab
        clean = prompts._clean(text)
        self.segments: list[bytes | _Slot] = []
        for i, f in enumerate(fields):
            self.segments.append(("{" if i == 0 else ", ").encode() + f'"{f}": '.encode())
            self.segments.append(_Slot(value_candidates(f, clean, today)))
        self.segments.append(b"}" if fields else b"{}")
        self.state: tuple | None = self._enter(0)
        self.seen = 0

    def _enter(self, seg: int) -> tuple:
        if seg >= len(self.segments):
            return ("E",)
        return ("L", seg, 0) if isinstance(self.segments[seg], bytes) else ("V", seg)

    def _next_bytes(self, st: tuple) -> Iterable[int]:
        kind = st[0]
        if kind == "L":
            return (self.segments[st[1]][st[2]],)
        if kind == "V":  # a field with no candidate in the text can only be null
            return (_NULL[0], _QUOTE) if self.segments[st[1]].complete else (_NULL[0],)
        if kind == "N":
            return (_NULL[st[2]],)
        if kind == "S":
            slot = self.segments[st[1]]
            nxt = slot.nexts.get(st[2], ())
            return (*nxt, _QUOTE) if st[2] in slot.complete else nxt
        return ()

    def _advance(self, st: tuple, b: int) -> tuple | None:
        kind = st[0]
        if kind == "L":
            lit = self.segments[st[1]]
            if lit[st[2]] != b:
                return None
            return self._enter(st[1] + 1) if st[2] + 1 == len(lit) else ("L", st[1], st[2] + 1)
        if kind == "V":
            if b == _NULL[0]:
                return ("N", st[1], 1)
            return ("S", st[1], b"") if b == _QUOTE and self.segments[st[1]].complete else None
        if kind == "N":
            if _NULL[st[2]] != b:
                return None
            return self._enter(st[1] + 1) if st[2] + 1 == len(_NULL) else ("N", st[1], st[2] + 1)
        if kind == "S":
            slot, v = self.segments[st[1]], st[2]
            if b == _QUOTE and v in slot.complete:
                return self._enter(st[1] + 1)
            return ("S", st[1], v + bytes((b,))) if b in slot.nexts.get(v, ()) else None
        return None

    def _after_special(self, token: int) -> tuple | None:
        # only END, and only at the end, is ever allowed
        return self.state if (token == self.vocab.end_id and self.state == ("E",)) else None

    def allowed(self, generated: Sequence[int]) -> list[int]:
        self._consume(generated)
        if self.state is None:
            return []
        if self.state == ("E",):
            return [self.vocab.end_id]
        out: list[int] = []
        stack = [(self.vocab.root, self.state)]
        while stack:
            node, st = stack.pop()
            for b in self._next_bytes(st):
                child = node.children.get(b)
                if child is None:
                    continue
                st2 = self._advance(st, b)
                out.extend(child.ids)
                if child.children and st2 != ("E",):
                    stack.append((child, st2))
        return out


# -- replies -----------------------------------------------------------------------------------------
_SPACE = ord(" ")


class SentenceConstraint(_ByteGrammar):
    """Keeps a reply to the phrasing the model was trained on (``phrasing``): the opening for this
    customer and topic, then each fact once in one of its phrasings, then optionally one closing.

    Every fact must be stated before a closing or the end may come (a fact whose value an earlier
    sentence already holds counts as stated, as in ``synth.reply_text``), so the reply is faithful and
    complete by construction; the model only chooses the order and the phrasing. A state is a set of
    paths (``state``; several sentences may share a prefix): (trie node or None between sentences, facts stated,
    whether the closing was written, whether a sentence after the opening was written).
    """

    def __init__(self, vocab: Vocab, facts: Mapping[str, str], customer_name: str, intent: str):
        self.vocab = vocab
        values = {k: str(v) for k, v in facts.items()}
        self.sentences: list[tuple[str, str | None]] = []  # (text, fact key; None for a closing)
        self.opening = _Node()
        self.body = _Node()
        for text in openings(greeting_name(customer_name), intent_topic(intent)):
            self._add(self.opening, text, None)
        self.n_openings = len(self.sentences)
        for key, value in values.items():
            for text in fact_sentences(key, value):
                self._add(self.body, text, key)
        for text in CLOSERS:
            self._add(self.body, text, None)
        self.values = values
        self.all_keys = frozenset(values)
        # the sentences under each node, so a path stops as soon as none of them may still be said
        # (the model would otherwise write a repeated fact to its end and find no way on)
        self.below: dict[int, list[int]] = {}
        self._collect(self.body)
        self.state: set[tuple] | None = {(self.opening, frozenset(), False, False)}
        self.seen = 0

    def _add(self, trie: _Node, text: str, key: str | None) -> None:
        self.sentences.append((text, key))
        node = trie
        for b in text.encode():
            node = node.children.setdefault(b, _Node())
        node.ids.append(len(self.sentences) - 1)  # the sentences that end here

    def _collect(self, node: _Node) -> list[int]:
        ids = [*node.ids, *(i for child in node.children.values() for i in self._collect(child))]
        self.below[id(node)] = ids
        return ids

    def _sayable(self, sid: int, stated: frozenset) -> bool:
        key = self.sentences[sid][1]
        return stated == self.all_keys if key is None else key not in stated

    def _stated_after(self, stated: frozenset, sid: int) -> frozenset | None:
        """Facts stated once fact sentence ``sid`` is added (every fact with the same value, which
        ``synth.reply_text`` says once); None if its fact was stated already."""
        key = self.sentences[sid][1]
        if key in stated:
            return None
        value = self.values[key].lower()
        return stated | {k for k, v in self.values.items() if v.lower() == value}

    def _step(self, path: tuple, b: int) -> list[tuple]:
        node, stated, closed, wrote_body = path
        if node is None:  # between sentences: only the space that starts the next one
            return [(self.body, stated, closed, wrote_body)] if b == _SPACE and not closed else []
        child = node.children.get(b)
        if child is None or (id(child) in self.below and not any(self._sayable(i, stated)
                                                                for i in self.below[id(child)])):
            return []
        return [(child, stated, closed, wrote_body)]

    def _finish(self, path: tuple) -> list[tuple]:
        """The paths that end a sentence at this node (and are then between sentences)."""
        node, stated, _closed, _wrote_body = path
        out = []
        for sid in node.ids:
            key = self.sentences[sid][1]
            if sid < self.n_openings:
                out.append((None, stated, False, False))
            elif key is None:  # a closing: only once every fact is stated
                if stated == self.all_keys:
                    out.append((None, stated, True, True))
            elif (nxt := self._stated_after(stated, sid)) is not None:
                out.append((None, nxt, False, True))
        return out

    def _advance(self, paths: set[tuple], b: int) -> set[tuple]:
        out: set[tuple] = set()
        for path in paths:
            out.update(self._step(path, b))
            for done in self._finish(path):
                out.update(self._step(done, b))
        return out

    def _may_end(self, paths: set[tuple]) -> bool:
        return any(wrote_body and stated == self.all_keys
                   for path in paths for _n, stated, _c, wrote_body in self._finish(path))

    def _after_special(self, token: int) -> None:
        return None  # END is the last token ever allowed

    def allowed(self, generated: Sequence[int]) -> list[int]:
        self._consume(generated)
        if self.state is None:
            return []
        out: list[int] = [self.vocab.end_id] if self._may_end(self.state) else []
        stack = [(self.vocab.root, frozenset(self.state))]
        visited: set = set()
        while stack:
            node, paths = stack.pop()
            for b, child in node.children.items():
                nxt = self._advance(set(paths), b)
                if not nxt:
                    continue
                out.extend(child.ids)
                key = (id(child), frozenset(nxt))
                if child.children and key not in visited:
                    visited.add(key)
                    stack.append((child, frozenset(nxt)))
        return out


def sentence_constraint(model: Any, facts: Mapping[str, str], customer_name: str, intent: str
                        ) -> SentenceConstraint:
    return SentenceConstraint(vocab_for(model.tokenizer, _vocab_size(model)), facts, customer_name, intent)


def extraction_constraint(model: Any, text: str, fields: Sequence[str], today: date | None = None
                          ) -> ExtractionConstraint:
    return ExtractionConstraint(vocab_for(model.tokenizer, _vocab_size(model)), text, fields, today)


def _vocab_size(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "vocab_size", None)
