"""Sales tools: products and pricing, limits, countries and currencies, leads, card orders."""
from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import Field

from support_agents.models import (
    CardOrder,
    Product,
    ProductLimit,
    SalesLead,
    SupportedCountry,
    SupportedCurrency,
)

from .base import Tool, ToolArgs, ToolContext, ToolError, register
from .fmt import money


class ProductsArgs(ToolArgs):
    kind: Product.Kind | None = None
    product_code: str | None = Field(default=None, max_length=60)


def _product_dict(p: Product) -> dict:
    return {"product": p.name, "product_code": p.code, "monthly_fee": money(p.monthly_fee, p.currency),
            "issue_fee": money(p.issue_fee, p.currency), "min_age": str(p.min_age),
            "delivery_days": str(p.delivery_days), "product_description": p.description}


def list_products(ctx: ToolContext, a: ProductsArgs) -> dict:
    qs = Product.objects.order_by("monthly_fee", "code")
    if a.kind:
        qs = qs.filter(kind=a.kind)
    if a.product_code:
        qs = qs.filter(code=a.product_code)
    items = [_product_dict(p) for p in qs[:10]]
    if not items:
        raise ToolError("no such product")
    return {**items[0], "products": ", ".join(f"{i['product']} ({i['monthly_fee']}/month)" for i in items)}


class LimitsArgs(ToolArgs):
    product_code: str | None = Field(default=None, max_length=60)
    limit_name: str | None = Field(default=None, max_length=60)


def product_limits(ctx: ToolContext, a: LimitsArgs) -> dict:
    qs = ProductLimit.objects.select_related("product").order_by("product__code", "name")
    if a.product_code:
        qs = qs.filter(product__code=a.product_code)
    if a.limit_name:
        qs = qs.filter(name=a.limit_name)
    rows = list(qs[:20])
    if not rows:
        raise ToolError("no such limit")
    first = rows[0]
    return {"limit_name": first.name.replace("_", " "), "limit": f"{money(first.amount, first.currency)} per {first.period}",
            "limit_product": first.product.name,
            "limits": "; ".join(f"{r.product.name} {r.name.replace('_', ' ')}: {money(r.amount, r.currency)} per {r.period}"
                                for r in rows)}


class CountryArgs(ToolArgs):
    country: str | None = Field(default=None, max_length=80)


def supported_countries(ctx: ToolContext, a: CountryArgs) -> dict:
    qs = SupportedCountry.objects.order_by("name")
    if a.country:
        c = qs.filter(code__iexact=a.country).first() or qs.filter(name__iexact=a.country).first()
        if c is None:
            return {"country": a.country, "country_supported": "no"}
        return {"country": c.name, "country_supported": "yes" if c.accounts_available else "no",
                "card_delivery": "yes" if c.card_delivery else "no", "delivery_days": str(c.delivery_days)}
    names = list(qs.filter(accounts_available=True).values_list("name", flat=True))
    return {"countries": ", ".join(names), "country_count": str(len(names))}


class CurrencyArgs(ToolArgs):
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")


def supported_currencies(ctx: ToolContext, a: CurrencyArgs) -> dict:
    qs = SupportedCurrency.objects.order_by("code")
    if a.currency:
        c = qs.filter(code__iexact=a.currency).first()
        if c is None:
            return {"currency": a.currency.upper(), "currency_supported": "no"}
        return {"currency": c.code, "currency_supported": "yes", "can_hold": "yes" if c.can_hold else "no",
                "exchange_markup": f"{c.exchange_markup_percent.normalize()}%", "rate_to_eur": str(c.rate_to_eur)}
    codes = list(qs.values_list("code", flat=True))
    return {"currencies": ", ".join(codes), "currency_count": str(len(codes))}


class LeadArgs(ToolArgs):
    interest: str = Field(max_length=300)
    product_code: str | None = Field(default=None, max_length=60)


def create_lead(ctx: ToolContext, a: LeadArgs) -> dict:
    product = Product.objects.filter(code=a.product_code).first() if a.product_code else None
    try:
        with transaction.atomic():
            lead = SalesLead.objects.create(customer=ctx.customer, product=product, ticket=ctx.ticket,
                                            interest=a.interest, idempotency_key=ctx.idempotency_key)
    except IntegrityError:
        lead = SalesLead.objects.get(idempotency_key=ctx.idempotency_key)
    return {"lead_id": str(lead.pk), "lead_status": lead.status}


class OrderCardArgs(ToolArgs):
    product_code: str = Field(max_length=60)
    delivery_country: str = Field(pattern=r"^[A-Za-z]{2}$")


def order_card(ctx: ToolContext, a: OrderCardArgs) -> dict:
    product = Product.objects.filter(code=a.product_code, kind=Product.Kind.CARD).first()
    if product is None:
        raise ToolError(f"{a.product_code} is not a card product")
    country = SupportedCountry.objects.filter(code__iexact=a.delivery_country, card_delivery=True).first()
    if country is None:
        raise ToolError(f"cards cannot be delivered to {a.delivery_country}")
    days = max(product.delivery_days, country.delivery_days)
    try:
        with transaction.atomic():
            order = CardOrder.objects.create(
                customer=ctx.customer, product=product, delivery_country=country.code,
                idempotency_key=ctx.idempotency_key,
                expected_delivery=timezone.now().date() + dt.timedelta(days=days))
    except IntegrityError:
        order = CardOrder.objects.get(idempotency_key=ctx.idempotency_key)
    return {"order_id": str(order.pk), "product": product.name, "issue_fee": money(product.issue_fee, product.currency),
            "expected_delivery": order.expected_delivery.isoformat(), "delivery_country": country.name}


register(Tool("products_pricing", "sales", "Products and their pricing.", ProductsArgs, list_products))
register(Tool("product_limits", "sales", "Limits of a product (top-up, ATM, payments...).", LimitsArgs, product_limits))
register(Tool("supported_countries", "sales", "Which countries are supported, with card delivery times.", CountryArgs,
              supported_countries))
register(Tool("supported_currencies", "sales", "Which currencies can be held or exchanged.", CurrencyArgs,
              supported_currencies))
register(Tool("create_lead", "sales", "Record a sales lead for this customer.", LeadArgs, create_lead, effect=True))
register(Tool("order_card", "sales", "Order a card product for this customer.", OrderCardArgs, order_card, effect=True))
