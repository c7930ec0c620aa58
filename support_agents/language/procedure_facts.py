"""Procedure-shaped facts for the agent model's training data, read without importing Django.

The pipeline's operating procedures (``support_agents/procedures/data/*.json``) say, per intent,
which fields to extract and which facts (tool result fields) the reply is written from. We read
them as JSON, and the demo bank's constants (fees, products, limits, countries, currencies, KB
answers) by parsing ``support_agents/services/bank_demo.py`` with ``ast`` (literals only), then
invent tool results of the same shape with random values. When either file is missing, small
built-in defaults keep generation working.
"""
from __future__ import annotations

import ast
import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .fields import PRODUCTS

APP = Path(__file__).resolve().parents[1]
TXN_STATUSES = ("completed", "pending", "reverted", "declined")
CARD_STATUSES = ("active", "frozen", "blocked", "expired", "inactive")
IDV_STATUSES = ("verified", "pending", "failed", "not_started")
IDV_REASONS = ("document photo was blurry", "name did not match the document", "selfie check pending",
               "document expired", "")
PIN_OUTCOMES = ("PIN unblocked", "PIN was not blocked", "identity verification required before unblocking")
DEFAULT_KB = "Please check the app for the latest status; our team will follow up if anything else is needed."


def load_procedures(root: Path = APP / "procedures" / "data") -> dict[str, dict]:
    out: dict[str, dict] = {}
    for f in sorted(root.glob("*.json")) if root.is_dir() else []:
        for p in json.loads(f.read_text()).get("procedures", []):
            out[p["intent"]] = p
    return out


def load_bank_constants(path: Path = APP / "services" / "bank_demo.py") -> dict[str, Any]:
    """Top-level literal assignments (FEES, PRODUCTS, KB, ...) of the demo bank module."""
    if not path.is_file():
        return {}
    out: dict[str, Any] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


class World:
    """Random but consistent tool results for one ticket (one transaction, one card, ...)."""

    def __init__(self, intent: str, used: dict[str, str], rng: random.Random, today: date, bank: dict[str, Any],
                 merchants: tuple[str, ...]):
        from .fields import normalize

        self.intent, self.rng, self.today, self.bank = intent, rng, today, bank
        self.cur = used.get("currency") or rng.choice(("GBP", "GBP", "EUR", "USD"))
        amt = normalize("amount", used["amount"]) if "amount" in used else None
        self.amount = amt or f"{rng.choice((rng.randint(1, 80), rng.randint(10, 900)))}.{rng.randint(0, 99):02d}"
        self.merchant = used.get("merchant") or rng.choice(merchants)
        d = normalize("date", used["date"], today) if "date" in used else None
        self.date = d or (today - timedelta(days=rng.randint(0, 60))).isoformat()
        self.last4 = used.get("card_last4") or f"{rng.randint(0, 9999):04d}"
        self.fee = rng.choice(bank.get("FEES") or [("fee", "Card payment fee", "Card payments are free.", "0", "0")])
        prods = bank.get("PRODUCTS") or [(p.lower().replace(" ", "-"), p, "card", "0", "0", 18, 5, "") for p in PRODUCTS]
        wanted = used.get("product")
        self.product = next((p for p in prods if wanted and p[1].lower() == wanted.lower()), None) or rng.choice(prods)
        self.countries = bank.get("COUNTRIES") or [("FR", "France", 5)]
        self.country = next((c for c in self.countries if used.get("country") == c[1]), None) or rng.choice(self.countries)
        self.currencies = bank.get("CURRENCIES") or [("GBP", "British pound", "1.17", "0")]

    def money(self, amount: str | None = None) -> str:
        return f"{amount or self.amount} {self.cur}"

    def value(self, expr: str) -> str | None:
        """A plausible value for a procedure fact expression like ``$results.txn.amount``."""
        r, bank = self.rng, self.bank
        parts = expr.lstrip("$").split(".")
        if parts[0] == "errors":
            return r.choice((
                f"refund {self.amount} is over the agent's limit of {r.choice(('50', '100', '250'))}",
                f"transfer PT{r.randint(1, 999999):06d} is already completed",
                "account is already pending_closure", "card is already frozen", "no pending transfer found",
            )) if r.random() < 0.5 else None
        key = parts[-1]
        small = f"{r.randint(0, 9)}.{r.choice(('00', '50', '99', '25'))}"
        table: dict[str, Any] = {
            "reference": lambda: f"TX{r.randint(1, 999999):06d}{r.randint(0, 9999):04d}",
            "transfer_reference": lambda: f"PT{r.randint(1, 999999):06d}",
            "merchant": lambda: self.merchant,
            "recipient": lambda: self.merchant if r.random() < 0.3 else r.choice(("Anna Kowalski", "Tom Byrne", "Lee Chen")),
            "amount": self.money, "transfer_amount": self.money,
            "refund_amount": self.money,
            "charged_fee": lambda: self.money(small), "fee": lambda: self.money(small),
            "balance": lambda: self.money(f"{r.randint(0, 5000)}.{r.randint(0, 99):02d}"),
            "date": lambda: self.date, "closure_date": lambda: self.today.isoformat(),
            "expected_delivery": lambda: (self.today + timedelta(days=r.randint(2, 10))).isoformat(),
            "status": lambda: r.choice(TXN_STATUSES + ("refunded", "cancelled", "closure requested")),
            "expected_days": lambda: "3-5 business days",
            "fee_name": lambda: self.fee[1], "fee_rule": lambda: self.fee[2], "fee_description": lambda: self.fee[2],
            "account": lambda: f"ending {r.randint(0, 9999):04d}",
            "product": lambda: self.product[1],
            "products": lambda: ", ".join(f"{p[1]} ({p[3]} GBP/month)" for p in (bank.get("PRODUCTS") or [])[:4]),
            "min_age": lambda: str(self.product[5]),
            "monthly_fee": lambda: f"{float(self.product[3]):.2f} GBP",
            "issue_fee": lambda: f"{float(self.product[4]):.2f} GBP",
            "delivery_days": lambda: str(self.country[2]),
            "limit_name": lambda: r.choice(("atm withdrawal", "top up", "card payment")),
            "limit": lambda: f"{r.choice(('400', '800', '1000', '3000', '10000'))}.00 GBP per {r.choice(('day', 'month'))}",
            "limit_product": lambda: self.product[1],
            "country": lambda: self.country[1], "delivery_country": lambda: self.country[1],
            "country_supported": lambda: r.choice(("yes", "no")),
            "countries": lambda: ", ".join(c[1] for c in r.sample(self.countries, min(5, len(self.countries)))),
            "currency": lambda: r.choice(self.currencies)[0],
            "currency_supported": lambda: r.choice(("yes", "no")),
            "exchange_markup": lambda: f"{r.choice(('0', '0.5', '1'))}%",
            "currencies": lambda: ", ".join(c[0] for c in self.currencies),
            "card_last4": lambda: self.last4, "card_kind": lambda: r.choice(("physical", "virtual")),
            "card_status": lambda: r.choice(CARD_STATUSES),
            "incident": lambda: r.choice([i[1] for i in bank.get("INCIDENTS", [])] + ["none"]),
            "incident_status": lambda: r.choice(("monitoring", "investigating", "resolved", "no open incident")),
            "incident_message": lambda: r.choice([i[3] for i in bank.get("INCIDENTS", [])] or [DEFAULT_KB]),
            "identity_status": lambda: r.choice(IDV_STATUSES), "identity_reason": lambda: r.choice(IDV_REASONS),
            "pin_outcome": lambda: r.choice(PIN_OUTCOMES),
            "answer": lambda: (bank.get("KB") or {}).get(self.intent, DEFAULT_KB),
        }
        if key == "status" and parts[1] == "txn":
            return r.choice(TXN_STATUSES)
        gen = table.get(key)
        return gen() if gen else r.choice(("yes", "no", "pending", "not available"))


def procedure_facts(proc: dict, world: World, rng: random.Random) -> dict[str, str]:
    """The procedure's facts rendered from invented results; like render_facts, empty ones are left out.

    Each fact is occasionally missing too (a step that errored with on_error: continue).
    """
    out: dict[str, str] = {}
    for key, expr in proc.get("facts", {}).items():
        if rng.random() < 0.1:
            continue
        v = world.value(str(expr)) if str(expr).startswith("$") else str(expr)
        if v not in (None, "", "none"):
            out[key] = str(v)
    return out
