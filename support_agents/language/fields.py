"""The fixed vocabulary of arguments the agent model extracts, and how each value is normalised.

Pure python (no Django) so training code, the pipeline and tests share one definition. Every value
the model proposes goes through ``normalize`` and ``grounded``: a value that is malformed or that
does not occur in the customer's words is dropped (None) rather than trusted.
"""
from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

FIELDS: dict[str, str] = {
    "amount": "a money amount as a plain decimal, e.g. 23.50 (no symbol, no thousands separator)",
    "currency": "ISO 4217 code, e.g. GBP, EUR, USD",
    "merchant": "shop, company or payee the payment went to, as the customer wrote it",
    "date": "the day of the transaction or event, normalised to YYYY-MM-DD",
    "card_last4": "the last four digits of a card",
    "country": "a country name",
    "product": "one of the bank's products (see PRODUCTS)",
    "transfer_reference": "a transfer or payment reference code",
    "recipient": "the person a transfer was sent to",
}

# The demo bank's product names. The pipeline's product table uses the same names; replies that
# name a product not among the ticket's facts are flagged as unfaithful.
PRODUCTS: tuple[str, ...] = (
    "Standard card",
    "Plus card",
    "Premium card",
    "Metal card",
    "Virtual card",
    "Disposable virtual card",
    "Spare card",
    "Savings account",
    "Joint account",
    "Business account",
    "Travel insurance",
    "Auto top-up",
)

CURRENCIES: dict[str, tuple[str, ...]] = {
    "GBP": ("£", "gbp", "pound", "pounds", "quid", "sterling"),
    "EUR": ("€", "eur", "euro", "euros"),
    "USD": ("$", "usd", "dollar", "dollars", "us dollars"),
    "CHF": ("chf", "franc", "francs", "swiss francs"),
    "JPY": ("¥", "jpy", "yen"),
    "PLN": ("pln", "zloty", "zlotys"),
    "SEK": ("sek", "krona", "swedish krona", "kronor"),
    "AUD": ("aud", "australian dollars"),
    "CAD": ("cad", "canadian dollars"),
}

MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)
_MONTH_RE = "|".join(m[:3] + f"(?:{m[3:]})?" if len(m) > 3 else m for m in MONTHS)

# Date spellings the extractor copies verbatim; normalisation turns them into ISO dates.
DATE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b"),
    re.compile(r"\b(?P<d>\d{1,2})/(?P<m>\d{1,2})/(?P<y>\d{4})\b"),
    re.compile(rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?: of)? (?P<mon>{_MONTH_RE})\.?(?:,? (?P<y>\d{{4}}))?\b", re.I),
    re.compile(rf"\b(?P<mon>{_MONTH_RE})\.? (?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:,? (?P<y>\d{{4}}))?\b", re.I),
)
RELATIVE_DAYS = {"today": 0, "yesterday": 1}


def _month(name: str) -> int:
    name = name.lower()[:3]
    return next(i + 1 for i, m in enumerate(MONTHS) if m[:3] == name)


def normalize_date(raw: str, today: date | None = None) -> str | None:
    """ISO date for one of DATE_PATTERNS; a day without a year is the latest such day <= today."""
    today = today or date.today()
    s = raw.strip().lower()
    if s in RELATIVE_DAYS:
        return (today - timedelta(days=RELATIVE_DAYS[s])).isoformat()
    for pat in DATE_PATTERNS:
        m = pat.fullmatch(raw.strip())
        if not m:
            continue
        g = m.groupdict()
        month = int(g["m"]) if g.get("m") else _month(g["mon"])
        day = int(g["d"])
        try:
            if g.get("y"):
                return date(int(g["y"]), month, day).isoformat()
            d = date(today.year, month, day)
            if d > today:
                d = date(today.year - 1, month, day)
            return d.isoformat()
        except ValueError:
            return None
    return None


def normalize_amount(raw: str) -> str | None:
    s = re.sub(r"[£€$¥,\s]", "", raw.strip())
    s = re.sub(r"(?i)[a-z]+$", "", s)
    if not re.fullmatch(r"\d+(\.\d{1,2})?", s):
        return None
    try:
        return str(Decimal(s).quantize(Decimal("0.01")))
    except InvalidOperation:
        return None


def normalize_currency(raw: str) -> str | None:
    s = raw.strip()
    if s.upper() in CURRENCIES:
        return s.upper()
    low = s.lower()
    return next((code for code, names in CURRENCIES.items() if low in names), None)


def normalize(field: str, raw: str | None, today: date | None = None) -> str | None:
    """Canonical form of one extracted value, or None when it is not a valid value of that field."""
    if raw is None:
        return None
    raw = str(raw).strip()
    if not raw or raw.lower() in ("none", "null", "n/a", "unknown"):
        return None
    if field == "amount":
        return normalize_amount(raw)
    if field == "currency":
        return normalize_currency(raw)
    if field == "date":
        return normalize_date(raw, today)
    if field == "card_last4":
        return raw if re.fullmatch(r"\d{4}", raw) else None
    if field == "product":
        return next((p for p in PRODUCTS if p.lower() == raw.lower()), None)
    if field == "transfer_reference":
        return raw.upper() if re.fullmatch(r"[A-Za-z0-9-]{4,24}", raw) else None
    if field in ("merchant", "country", "recipient"):
        return raw if len(raw) <= 60 and re.search(r"[A-Za-z]", raw) else None
    raise KeyError(f"unknown field {field!r}; known: {', '.join(FIELDS)}")


def grounded(field: str, raw: str, text: str) -> bool:
    """True when the raw value is supported by the customer's words (guards against invention)."""
    low = text.lower()
    raw_l = str(raw).strip().lower()
    if field == "currency":
        code = normalize_currency(raw_l)
        names = (code.lower(), *CURRENCIES[code]) if code else (raw_l,)
        return any(
            (n in low) if not n.isalpha() else re.search(rf"\b{re.escape(n)}\b", low) is not None for n in names
        )
    if field == "amount":
        num = re.sub(r"[£€$¥\s]", "", raw_l)
        return re.search(rf"(?<![\d.]){re.escape(num)}(?![\d])", low) is not None
    if field == "product":
        # customers say "metal card" for the "Metal card" product
        return raw_l in low or raw_l.split()[0] in low
    return raw_l in low
