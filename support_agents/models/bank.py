"""The demo bank's own tables: what the agents' tools read and change.

Money is Decimal everywhere; every effect row (refund, lead, card order, cancellation) carries the
idempotency key of the tool call that made it, under a unique constraint, so a redelivered task can
never apply an effect twice.
"""
from __future__ import annotations

from django.db import models


class Account(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PENDING_CLOSURE = "pending_closure"
        CLOSED = "closed"

    customer = models.ForeignKey("support_agents.Customer", on_delete=models.CASCADE, related_name="accounts")
    number = models.CharField(max_length=34, unique=True)
    currency = models.CharField(max_length=3, default="EUR")
    balance = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    closure_key = models.CharField(max_length=200, unique=True, null=True, blank=True)
    opened_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.number} ({self.currency})"


class Card(models.Model):
    class Status(models.TextChoices):
        NOT_ACTIVATED = "not_activated"
        ACTIVE = "active"
        FROZEN = "frozen"
        BLOCKED = "blocked"
        LOST = "lost"
        EXPIRED = "expired"

    class Kind(models.TextChoices):
        PHYSICAL = "physical"
        VIRTUAL = "virtual"
        DISPOSABLE = "disposable"

    customer = models.ForeignKey("support_agents.Customer", on_delete=models.CASCADE, related_name="cards")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="cards")
    last4 = models.CharField(max_length=4)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.PHYSICAL)
    network = models.CharField(max_length=12, default="visa")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    pin_blocked = models.BooleanField(default=False)
    contactless_enabled = models.BooleanField(default=True)
    expires_on = models.DateField()
    issued_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["customer", "last4"])]

    def __str__(self) -> str:
        return f"{self.kind} card •••• {self.last4}"


class FeeSchedule(models.Model):
    code = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField()
    fixed_amount = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    percent = models.DecimalField(max_digits=6, decimal_places=3, default=0)
    currency = models.CharField(max_length=3, default="EUR")

    def __str__(self) -> str:
        return self.name


class Transaction(models.Model):
    class Kind(models.TextChoices):
        CARD_PAYMENT = "card_payment"
        TRANSFER = "transfer"
        TOP_UP = "top_up"
        CASH_WITHDRAWAL = "cash_withdrawal"
        DIRECT_DEBIT = "direct_debit"
        FEE = "fee"
        REFUND = "refund"
        EXCHANGE = "exchange"

    class Status(models.TextChoices):
        PENDING = "pending"
        COMPLETED = "completed"
        REVERTED = "reverted"
        DECLINED = "declined"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="transactions")
    card = models.ForeignKey(Card, on_delete=models.SET_NULL, null=True, blank=True, related_name="transactions")
    reference = models.CharField(max_length=40, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    merchant = models.CharField(max_length=120, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    fee = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    fee_code = models.ForeignKey(FeeSchedule, on_delete=models.SET_NULL, null=True, blank=True)
    exchange_rate = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETED)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.reference} {self.amount} {self.currency} {self.merchant}"


class Refund(models.Model):
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="refunds")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=300, blank=True)
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"refund {self.amount} {self.currency} of {self.transaction_id}"


class PendingTransfer(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        CANCELLED = "cancelled"
        COMPLETED = "completed"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="pending_transfers")
    reference = models.CharField(max_length=40, unique=True)
    recipient = models.CharField(max_length=120)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    cancel_key = models.CharField(max_length=200, unique=True, null=True, blank=True)
    created_at = models.DateTimeField()
    expected_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.reference} -> {self.recipient}"


class Product(models.Model):
    class Kind(models.TextChoices):
        CARD = "card"
        PLAN = "plan"
        SERVICE = "service"

    code = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    description = models.TextField()
    monthly_fee = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    issue_fee = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, default="EUR")
    min_age = models.PositiveSmallIntegerField(default=18)
    delivery_days = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class ProductLimit(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="limits")
    name = models.CharField(max_length=60)  # e.g. top_up, atm_withdrawal, card_payment
    period = models.CharField(max_length=12, default="month")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product", "name", "period"], name="uniq_product_limit")]

    def __str__(self) -> str:
        return f"{self.product_id} {self.name}: {self.amount} {self.currency}/{self.period}"


class SupportedCountry(models.Model):
    code = models.CharField(max_length=2, unique=True)
    name = models.CharField(max_length=80)
    card_delivery = models.BooleanField(default=True)
    delivery_days = models.PositiveSmallIntegerField(default=5)
    accounts_available = models.BooleanField(default=True)

    class Meta:
        verbose_name_plural = "supported countries"

    def __str__(self) -> str:
        return self.name


class SupportedCurrency(models.Model):
    code = models.CharField(max_length=3, unique=True)
    name = models.CharField(max_length=60)
    can_hold = models.BooleanField(default=True)
    can_exchange = models.BooleanField(default=True)
    rate_to_eur = models.DecimalField(max_digits=12, decimal_places=6, default=1)
    exchange_markup_percent = models.DecimalField(max_digits=5, decimal_places=2, default=0)

    class Meta:
        verbose_name_plural = "supported currencies"

    def __str__(self) -> str:
        return self.code


class ServiceIncident(models.Model):
    class Status(models.TextChoices):
        INVESTIGATING = "investigating"
        IDENTIFIED = "identified"
        MONITORING = "monitoring"
        RESOLVED = "resolved"

    component = models.CharField(max_length=30)  # cards, transfers, top_up, app, atm, contactless
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices)
    customer_message = models.TextField()
    started_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.title


class KnowledgeArticle(models.Model):
    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    body = models.TextField()
    intents = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return self.title


class IdentityVerification(models.Model):
    class Status(models.TextChoices):
        NOT_STARTED = "not_started"
        PENDING = "pending"
        VERIFIED = "verified"
        REJECTED = "rejected"

    customer = models.OneToOneField("support_agents.Customer", on_delete=models.CASCADE, related_name="identity")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.NOT_STARTED)
    reason = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.status}"


class SalesLead(models.Model):
    customer = models.ForeignKey("support_agents.Customer", on_delete=models.CASCADE, related_name="leads")
    product = models.ForeignKey(Product, on_delete=models.SET_NULL, null=True, blank=True)
    ticket = models.ForeignKey("support_agents.Ticket", on_delete=models.SET_NULL, null=True, blank=True)
    interest = models.CharField(max_length=300)
    status = models.CharField(max_length=12, default="new")
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"lead {self.pk}: {self.interest}"


class CardOrder(models.Model):
    customer = models.ForeignKey("support_agents.Customer", on_delete=models.CASCADE, related_name="card_orders")
    product = models.ForeignKey(Product, on_delete=models.PROTECT)
    delivery_country = models.CharField(max_length=2)
    status = models.CharField(max_length=12, default="ordered")
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expected_delivery = models.DateField()

    def __str__(self) -> str:
        return f"card order {self.pk}"


__all__ = [
    "Account", "Card", "FeeSchedule", "Transaction", "Refund", "PendingTransfer", "Product", "ProductLimit",
    "SupportedCountry", "SupportedCurrency", "ServiceIncident", "KnowledgeArticle", "IdentityVerification",
    "SalesLead", "CardOrder",
]
