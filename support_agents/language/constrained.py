"""Constrained decoding for the agent model: grounded extraction values and faithful replies.

The engine asks a request's constraint, once per decode step, which token ids may come next
(``moe_engine.generate.TokenConstraint``). Here the rules live:

* ``ExtractionConstraint`` forces the JSON skeleton ``{"f1": V, "f2": V}`` in the requested field
  order; each V is ``null`` or a quoted value from a small candidate set per field: spans of the
  customer's cleaned text (1-4 words) that ``normalize`` accepts for that field and ``grounded``
  supports, so the model can only choose, never invent. (Currency may also be the ISO code, the form
  the model was trained to write, when the text names that currency.)
* ``ReplyConstraint`` lets the model write freely except: every whitespace-separated word holding a
  digit (amount, date, card digits, percentage, reference) must be a prefix of such a word in the
  facts or the customer's name, and may end only when complete; number words, currency codes and
  product names that ``faithfulness_problems`` would flag cannot be completed; currency symbols not in
  the facts cannot be written.

The vocabulary is byte-level BPE: each token's bytes are computed once per tokenizer (``Vocab``),
and extraction walks a byte trie of the vocabulary along the bytes the grammar allows, so a step
costs what the few valid continuations cost, not the 4,096 tokens.
"""
from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

import torch
from torch import Tensor

from . import prompts
from .faithfulness import _CODE, _NUMBER, _NUMBER_WORDS, _SYMBOLS
from .fields import CURRENCIES, DATE_PATTERNS, MONTHS, PRODUCTS, grounded, normalize


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
    """Per-tokenizer tables: token bytes, a byte trie, and masks of token classes (built once)."""

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
        self.by_bytes: dict[bytes, int] = {}
        for i, b in enumerate(self.bytes):
            if not b:
                continue
            node = self.root
            for c in b:
                node = node.children.setdefault(c, _Node())
            node.ids.append(i)
            self.by_bytes.setdefault(b, i)
        text = [b.decode("utf-8", "replace") if b else "" for b in self.bytes]
        self.text = text

        def mask(pred: Any) -> Tensor:
            return torch.tensor([bool(b) and pred(b, t) for b, t in zip(self.bytes, text, strict=True)])

        self.regular = mask(lambda b, t: True)  # every non-special token
        self.has_digit = mask(lambda b, t: any(48 <= c <= 57 for c in b))
        self.starts_space = mask(lambda b, t: b[:1].isspace())
        self.starts_word = mask(lambda b, t: bool(re.match(r"\w", t)))  # continues a \w run
        self.partial = mask(lambda b, t: "\ufffd" in t)  # not whole UTF-8 characters on its own
        self.punct = mask(lambda b, t: not re.search(r"[\w\s\ufffd]", t))
        self.by_lower: dict[str, list[int]] = {}
        for i, t in enumerate(text):
            if self.bytes[i]:
                self.by_lower.setdefault(t.lower(), []).append(i)
        self.symbol = {s: mask(lambda b, t, s=s: s in t) for s in _SYMBOLS}
        self.digit_ids = self.has_digit.nonzero().flatten().tolist()


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


class ExtractionConstraint:
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

    def _consume(self, generated: Sequence[int]) -> None:
        for t in generated[self.seen :]:
            if self.state is None:
                break
            b = self.vocab.bytes[t] if 0 <= t < self.vocab.size else None
            if b is None:  # a special token: only END, and only at the end, is ever allowed
                self.state = self.state if (t == self.vocab.end_id and self.state == ("E",)) else None
                continue
            for c in b:
                self.state = self._advance(self.state, c)
                if self.state is None:
                    break
        self.seen = len(generated)

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
_DIGIT = re.compile(r"\d")
_WS = re.compile(r"\s")


def _core(word: str) -> str:
    return word.lstrip(_LEAD).rstrip(_TRAIL)


class ReplyConstraint:
    """Keeps a free-text reply inside what ``faithfulness_problems`` accepts (see the module doc).

    Byte-level BPE tokens hold no whitespace after their first character and never mix letters,
    digits and punctuation, so a token either starts a new word (leading whitespace) or grows the
    current one. The digit rule is checked on the current word; a flagged name (number word,
    currency code, product) is blocked at the token that would complete it.
    """

    def __init__(self, vocab: Vocab, facts: Mapping[str, str], customer_name: str = "",
                 products: Iterable[str] = PRODUCTS):
        self.vocab = vocab
        fact_text = " ".join(str(v) for v in facts.values()) + " " + customer_name
        low = fact_text.lower()
        words = {w.lstrip(_LEAD) for w in fact_text.split()}
        # digit words as written in the facts (whole, or without trailing punctuation), and bare numbers
        self.digit_words = {x for w in words for x in (w, w.rstrip(_TRAIL)) if _DIGIT.search(x)}
        self.digit_words |= {m.group(0) for m in _NUMBER.finditer(fact_text)}
        self.digit_prefixes = {f[:k] for f in self.digit_words for k in range(1, len(f) + 1)}
        codes = set(_CODE.findall(fact_text.upper())) | {c for s, c in _SYMBOLS.items() if s in fact_text}
        # (name, case-insensitive) pairs the reply must not complete
        self.banned = [(w, True) for w in _NUMBER_WORDS if not re.search(rf"\b{w}\b", low)]
        self.banned += [(c, False) for c in CURRENCIES if c not in codes]
        self.banned += [(p, False) for p in products if p.lower() not in low]
        self.banned_symbols = [s for s, c in _SYMBOLS.items() if c not in codes]
        # month names the facts do not use: next to a day number they would make a date
        self.months = {n for m in MONTHS for n in (m, m[:3]) if not re.search(rf"\b{m[:3]}", low)}
        # begun name -> the rests that would complete it (keys lower-cased where case does not matter)
        self.rests: dict[tuple[str, bool], list[str]] = {}
        for name, nocase in self.banned:
            key = name.lower() if nocase else name
            for k in range(1, len(key)):
                self.rests.setdefault((key[:k], nocase), []).append(key[k:])
        allowed = vocab.regular.clone()
        for s in self.banned_symbols:
            allowed &= ~vocab.symbol[s]
        for name, nocase in self.banned:  # a token holding a whole flagged word, e.g. " five", " EUR"
            if " " not in name:
                for i in [*vocab.by_lower.get(name.lower(), ()), *vocab.by_lower.get(" " + name.lower(), ())]:
                    if nocase or vocab.text[i].lstrip() == name:
                        allowed[i] = False
        self.glued = allowed & ~vocab.starts_space  # tokens that grow the current word (checked per step)
        self.glued_plain = self.glued & ~vocab.has_digit
        # a digit token that starts a word must begin some fact digit word
        fresh = allowed.clone()
        fresh[[i for i in vocab.digit_ids if not self._word_ok(vocab.text[i].lstrip(), final=False)]] = False
        self.space_start = fresh & vocab.starts_space
        self.glued_fresh_digits = fresh & ~vocab.starts_space & vocab.has_digit
        self.glued_punct = (self.glued & vocab.punct).nonzero().flatten().tolist()
        self.raw = b""
        self.text = ""
        self.seen = 0

    def _word_ok(self, word: str, *, final: bool) -> bool:
        """Whether a whitespace-free word may stand (final) or may still grow into an allowed one."""
        core = word.lstrip(_LEAD)
        if not _DIGIT.search(core):
            return True
        if core in self.digit_words or core.rstrip(_TRAIL) in self.digit_words:
            return True
        return not final and core in self.digit_prefixes

    def _completing(self, text: str) -> list[int]:
        """Tokens that would complete a flagged name the text has begun (word-bounded on the left)."""
        v, out = self.vocab, []
        tail = text[-40:]
        # a name begins where a word begins; products span up to three words
        for m in list(re.finditer(r"\b\w", tail))[-3:]:
            begun = tail[m.start() :]
            for nocase in (False, True):
                for rest in self.rests.get((begun.lower() if nocase else begun, nocase), ()):
                    ids = v.by_lower.get(rest.lower(), ())
                    out += ids if nocase else [i for i in ids if v.text[i] == rest]
        return out

    def allowed(self, generated: Sequence[int]) -> Tensor:
        v = self.vocab
        if len(generated) > self.seen:
            self.raw += b"".join(v.bytes[t] or b"" for t in generated[self.seen :])
            self.text = self.raw.decode("utf-8", "ignore")
            self.seen = len(generated)
        text = self.text
        cut = len(text)
        while cut and not text[cut - 1].isspace():
            cut -= 1
        word = text[cut:]
        core = word.lstrip(_LEAD)
        if not _DIGIT.search(core):
            mask = self.space_start | self.glued_plain
            mask[v.end_id] = True
            # digits glued to letters ("TX" + "45") or to a leading "(" or "£" must begin a fact word
            for i in self._growing(core) if core else ():
                mask[i] = bool(self.glued[i]) and self._word_ok(word + v.text[i], final=False)
            if not core:
                mask |= self.glued_fresh_digits
        else:
            final = self._word_ok(word, final=True)
            mask = self.space_start.clone() if final else torch.zeros_like(self.space_start)
            mask[v.end_id] = final
            for i in self._growing(core) + self.glued_punct:
                mask[i] = bool(self.glued[i]) and self._word_ok(word + v.text[i], final=False)
        for i in self._completing(text) + self._month_blocks(text):
            mask[i] = False
        month = re.search(r"\b([A-Za-z]+)\.?( ?)$", text[-16:])
        if month is not None and month.group(1).lower() in self.months:  # "September" + " 5" is a date
            mask &= ~(v.has_digit & (~v.starts_space if month.group(2) else v.starts_space))
        if self.raw[-4:].decode("utf-8", "replace").endswith("\ufffd"):
            # an unfinished UTF-8 character: a continuation byte must not complete a banned symbol
            for i in (mask & v.partial).nonzero().flatten().tolist():
                done = (self.raw[-4:] + (v.bytes[i] or b"")).decode("utf-8", "ignore")
                mask[i] = not any(s in done for s in self.banned_symbols)
        return mask

    def _month_blocks(self, text: str) -> list[int]:
        """Tokens that would write a date the facts lack: a month name next to a day number."""
        if not self.months:
            return []
        v, out = self.vocab, []
        day = re.search(r"\b\d{1,2}(?:st|nd|rd|th)?(?: of)?( ?)([A-Za-z]*)$", text[-24:])
        if day is not None:  # "5 Sept" + "ember", "5" + " March"
            space, begun = day.group(1), day.group(2).lower()
            for name in self.months:
                if space and name.startswith(begun) and len(name) > len(begun):
                    out += v.by_lower.get(name[len(begun) :], [])
                elif not space and not begun:
                    out += v.by_lower.get(" " + name, [])
        return out

    def _growing(self, core: str) -> list[int]:
        """Tokens that extend ``core`` along some fact digit word."""
        rests = {f[len(core) :] for f in self.digit_words if f.startswith(core)}
        ids = {self.vocab.by_bytes.get(r[:k].encode()) for r in rests for k in range(1, len(r) + 1)}
        return [i for i in ids if i is not None]


def extraction_constraint(model: Any, text: str, fields: Sequence[str], today: date | None = None
                          ) -> ExtractionConstraint:
    return ExtractionConstraint(vocab_for(model.tokenizer, _vocab_size(model)), text, fields, today)


def reply_constraint(model: Any, facts: Mapping[str, str], customer_name: str = "",
                     products: Iterable[str] = PRODUCTS) -> ReplyConstraint:
    return ReplyConstraint(vocab_for(model.tokenizer, _vocab_size(model)), facts, customer_name, products)


def _vocab_size(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "vocab_size", None)
