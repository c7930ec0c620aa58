"""Console-side write services that no other module provides (prices). Validated, audited,
announced to admins' consoles after commit."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from support_agents.events import publish_event
from support_agents.models import AuditEvent, PriceSetting
from support_agents.services.audit import actor_for_user


def price_settings() -> dict[str, Any]:
    rows = {p.device: p for p in PriceSetting.objects.all()}
    gpu, cpu = rows.get("gpu"), rows.get("cpu")
    return {
        "gpu_price_per_hour": gpu.price_per_hour if gpu else Decimal("0"),
        "cpu_price_per_hour": cpu.price_per_hour if cpu else Decimal("0"),
        "currency": (gpu or cpu).currency if (gpu or cpu) else "USD",
    }


def price_settings_update(user: Any, *, gpu: Decimal, cpu: Decimal, currency: str) -> None:
    """Set the per-hour device prices new model calls are costed with (past steps keep their cost)."""
    errors = {}
    for field, value in (("gpu_price_per_hour", gpu), ("cpu_price_per_hour", cpu)):
        if not isinstance(value, Decimal) or not value.is_finite() or value < 0 or value > Decimal("100000"):
            errors[field] = "an amount from 0 to 100000 per hour"
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha() and currency.isupper()):
        errors["currency"] = "a 3-letter ISO currency code, e.g. USD"
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        before = price_settings()
        for device, price in (("gpu", gpu), ("cpu", cpu)):
            PriceSetting.objects.update_or_create(device=device,
                                                  defaults={"price_per_hour": price, "currency": currency})
        after = {"gpu_price_per_hour": str(gpu), "cpu_price_per_hour": str(cpu), "currency": currency}
        AuditEvent.objects.create(actor=actor_for_user(user), verb="prices.updated",
                                  data={"before": {k: str(v) for k, v in before.items()}, "after": after})
        publish_event("admin.prices_updated", ticket_id=None, data=after)
