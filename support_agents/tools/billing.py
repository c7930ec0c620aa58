"""Billing tools: transactions, fees, refunds, pending transfers, account closure."""
from __future__ import annotations

from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone
from pydantic import Field

from support_agents.models import Account, FeeSchedule, PendingTransfer, Refund, Transaction

from .base import Tool, ToolArgs, ToolContext, ToolError, register
from .fmt import money, txn_dict


class LookupTransactionsArgs(ToolArgs):
    merchant: str | None = Field(default=None, max_length=120)
    amount: Decimal | None = Field(default=None, gt=0, max_digits=14, decimal_places=2)
    kind: Transaction.Kind | None = None
    status: Transaction.Status | None = None
    reference: str | None = Field(default=None, max_length=40)
    limit: int = Field(default=5, ge=1, le=20)


def lookup_transactions(ctx: ToolContext, a: LookupTransactionsArgs) -> dict:
    qs = Transaction.objects.filter(account__customer=ctx.customer).select_related("fee_code")
    if a.reference:
        qs = qs.filter(reference__iexact=a.reference)
    if a.kind:
        qs = qs.filter(kind=a.kind)
    if a.status:
        qs = qs.filter(status=a.status)
    rows = list(qs.order_by("-created_at")[:200])
    # Merchant and amount rank rather than filter: customers misspell merchants and round amounts.
    def score(t: Transaction) -> tuple:
        m = bool(a.merchant) and a.merchant.lower() in t.merchant.lower()
        amt = a.amount is not None and abs(t.amount - a.amount) < Decimal("0.01")
        return (m, amt)
    if a.merchant or a.amount is not None:
        ranked = sorted(rows, key=score, reverse=True)
        rows = [t for t in ranked if any(score(t))] or []
    rows = rows[: a.limit]
    out = {"found": bool(rows), "count": len(rows), "transactions": [txn_dict(t) for t in rows]}
    if rows:
        out.update(txn_dict(rows[0]))
    return out


class ExplainFeeArgs(ToolArgs):
    transaction_reference: str | None = Field(default=None, max_length=40)
    fee_code: str | None = Field(default=None, max_length=60)
    kind: Transaction.Kind | None = None


def explain_fee(ctx: ToolContext, a: ExplainFeeArgs) -> dict:
    fee = None
    txn = None
    if a.transaction_reference:
        txn = Transaction.objects.filter(account__customer=ctx.customer, reference__iexact=a.transaction_reference) \
            .select_related("fee_code").first()
    elif a.kind:
        txn = Transaction.objects.filter(account__customer=ctx.customer, kind=a.kind, fee__gt=0) \
            .select_related("fee_code").order_by("-created_at").first()
    if txn is not None:
        fee = txn.fee_code
    if fee is None and a.fee_code:
        fee = FeeSchedule.objects.filter(code=a.fee_code).first()
    if fee is None:
        raise ToolError("no fee found for that transaction or fee code")
    out = {"fee_name": fee.name, "fee_description": fee.description, "fee_code": fee.code,
           "fee_rule": _fee_rule(fee)}
    if txn is not None:
        out.update({"charged_fee": money(txn.fee, txn.currency), "reference": txn.reference,
                    "merchant": txn.merchant, "date": txn.created_at.date().isoformat()})
    return out


def _fee_rule(fee: FeeSchedule) -> str:
    parts = []
    if fee.fixed_amount:
        parts.append(money(fee.fixed_amount, fee.currency))
    if fee.percent:
        parts.append(f"{fee.percent.normalize()}%")
    return " + ".join(parts) or "free"


class IssueRefundArgs(ToolArgs):
    transaction_reference: str = Field(max_length=40)
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2)
    reason: str = Field(default="customer request", max_length=300)


def _refundable(ctx: ToolContext, a: IssueRefundArgs) -> Transaction:
    txn = Transaction.objects.filter(account__customer=ctx.customer, reference__iexact=a.transaction_reference).first()
    if txn is None:
        raise ToolError(f"transaction {a.transaction_reference} not found for this customer")
    if txn.kind in (Transaction.Kind.REFUND, Transaction.Kind.TOP_UP):
        raise ToolError(f"a {txn.kind} cannot be refunded")
    already = txn.refunds.aggregate(s=Sum("amount"))["s"] or Decimal(0)
    if a.amount + already > txn.amount + txn.fee:
        raise ToolError(f"refund of {a.amount} exceeds the refundable {txn.amount + txn.fee - already} {txn.currency}")
    return txn


def refund_needs_approval(ctx: ToolContext, a: IssueRefundArgs) -> str | None:
    _refundable(ctx, a)  # never ask a human to approve a refund that could not be made anyway
    limit = Decimal(str(ctx.profile.refund_approval_limit))
    if a.amount > limit:
        return f"refund {a.amount} is over the agent's limit of {limit}"
    return None


def issue_refund(ctx: ToolContext, a: IssueRefundArgs) -> dict:
    with transaction.atomic():
        txn = _refundable(ctx, a)
        try:
            with transaction.atomic():
                refund = Refund.objects.create(transaction=txn, amount=a.amount, currency=txn.currency,
                                               reason=a.reason, idempotency_key=ctx.idempotency_key)
                Account.objects.filter(pk=txn.account_id).update(balance=F("balance") + a.amount)
        except IntegrityError:
            refund = Refund.objects.get(idempotency_key=ctx.idempotency_key)
    return {"refund_id": refund.pk, "refund_amount": money(refund.amount, refund.currency),
            "reference": txn.reference, "merchant": txn.merchant, "status": "refunded",
            "expected_days": "3-5 business days"}


class CancelTransferArgs(ToolArgs):
    transfer_reference: str | None = Field(default=None, max_length=40)


def cancel_transfer(ctx: ToolContext, a: CancelTransferArgs) -> dict:
    qs = PendingTransfer.objects.filter(account__customer=ctx.customer)
    with transaction.atomic():
        if a.transfer_reference:
            tr = qs.select_for_update().filter(reference__iexact=a.transfer_reference).first()
        else:
            tr = qs.select_for_update().filter(Q(status="pending") | Q(cancel_key=ctx.idempotency_key)) \
                .order_by("-created_at").first()
        if tr is None:
            raise ToolError("no pending transfer found")
        if tr.cancel_key == ctx.idempotency_key:
            pass  # this very call already cancelled it (redelivery)
        elif tr.status != PendingTransfer.Status.PENDING:
            raise ToolError(f"transfer {tr.reference} is already {tr.status}")
        else:
            tr.status = PendingTransfer.Status.CANCELLED
            tr.cancel_key = ctx.idempotency_key
            tr.save(update_fields=["status", "cancel_key"])
    return {"transfer_reference": tr.reference, "recipient": tr.recipient,
            "transfer_amount": money(tr.amount, tr.currency), "status": "cancelled"}


class CloseAccountArgs(ToolArgs):
    reason: str = Field(default="customer request", max_length=300)


def close_account(ctx: ToolContext, a: CloseAccountArgs) -> dict:
    with transaction.atomic():
        acc = Account.objects.select_for_update().filter(customer=ctx.customer).order_by("opened_at").first()
        if acc is None:
            raise ToolError("customer has no account")
        if acc.closure_key != ctx.idempotency_key:
            if acc.status != Account.Status.ACTIVE:
                raise ToolError(f"account is already {acc.status}")
            acc.status = Account.Status.PENDING_CLOSURE
            acc.closure_key = ctx.idempotency_key
            acc.save(update_fields=["status", "closure_key"])
    return {"account": f"ending {acc.number[-4:]}", "status": "closure requested",
            "balance": money(acc.balance, acc.currency), "closure_date": (timezone.now().date()).isoformat()}


register(Tool("lookup_transactions", "billing", "Find the customer's transactions by merchant, amount, kind or reference.",
              LookupTransactionsArgs, lookup_transactions))
register(Tool("explain_fee", "billing", "Explain a fee charged on a transaction or a fee code.", ExplainFeeArgs, explain_fee))
register(Tool("issue_refund", "billing", "Refund (part of) one of the customer's transactions.", IssueRefundArgs,
              issue_refund, effect=True, approval=refund_needs_approval))
register(Tool("cancel_pending_transfer", "billing", "Cancel one of the customer's pending transfers.", CancelTransferArgs,
              cancel_transfer, effect=True))
register(Tool("close_account", "billing", "Start closing the customer's account (always needs approval).",
              CloseAccountArgs, close_account, effect=True, approval=lambda ctx, a: "account closure"))
