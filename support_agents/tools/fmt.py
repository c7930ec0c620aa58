"""Flat, string-valued views of bank rows: tool results become reply facts as they are."""
from __future__ import annotations

from decimal import Decimal


def money(amount: Decimal, currency: str) -> str:
    return f"{Decimal(amount).quantize(Decimal('0.01'))} {currency}"


def txn_dict(t) -> dict:
    return {"reference": t.reference, "kind": t.kind, "merchant": t.merchant,
            "amount": money(t.amount, t.currency), "amount_value": str(t.amount), "currency": t.currency,
            "fee": money(t.fee, t.currency), "status": t.status, "date": t.created_at.date().isoformat(),
            "fee_name": t.fee_code.name if t.fee_code_id else ""}


def card_dict(c) -> dict:
    return {"card_last4": c.last4, "card_kind": c.kind, "card_network": c.network, "card_status": c.status,
            "pin_blocked": "yes" if c.pin_blocked else "no", "expires_on": c.expires_on.isoformat()}
