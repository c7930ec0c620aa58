"""Technical tools: cards, PIN, identity verification, incidents, knowledge base."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from pydantic import Field

from support_agents.models import Card, IdentityVerification, KnowledgeArticle, ServiceIncident

from .base import Tool, ToolArgs, ToolContext, ToolError, register
from .fmt import card_dict


class CardArgs(ToolArgs):
    card_last4: str | None = Field(default=None, pattern=r"^\d{4}$")


def _card(ctx: ToolContext, last4: str | None, *, lock: bool = False) -> Card:
    qs = Card.objects.filter(customer=ctx.customer)
    if lock:
        qs = qs.select_for_update()
    if last4:
        card = qs.filter(last4=last4).first()
        if card is None:
            raise ToolError(f"no card ending {last4} on this customer's profile")
        return card
    # Without a number, the customer means their main card: newest physical, else newest any.
    card = qs.filter(kind=Card.Kind.PHYSICAL).order_by("-issued_at").first() or qs.order_by("-issued_at").first()
    if card is None:
        raise ToolError("customer has no card")
    return card


def card_status(ctx: ToolContext, a: CardArgs) -> dict:
    return card_dict(_card(ctx, a.card_last4))


def freeze_card(ctx: ToolContext, a: CardArgs) -> dict:
    with transaction.atomic():
        card = _card(ctx, a.card_last4, lock=True)
        if card.status in (Card.Status.ACTIVE, Card.Status.NOT_ACTIVATED):
            card.status = Card.Status.FROZEN
            card.save(update_fields=["status"])
    return card_dict(card)


def unfreeze_card(ctx: ToolContext, a: CardArgs) -> dict:
    with transaction.atomic():
        card = _card(ctx, a.card_last4, lock=True)
        if card.status == Card.Status.FROZEN:
            card.status = Card.Status.ACTIVE
            card.save(update_fields=["status"])
        elif card.status != Card.Status.ACTIVE:
            raise ToolError(f"card ending {card.last4} is {card.status} and cannot be unfrozen")
    return card_dict(card)


def unblock_pin(ctx: ToolContext, a: CardArgs) -> dict:
    # The PIN flow: a verified customer gets the PIN unblocked; anyone else is sent to verify first.
    with transaction.atomic():
        card = _card(ctx, a.card_last4, lock=True)
        idv = IdentityVerification.objects.filter(customer=ctx.customer).first()
        verified = idv is not None and idv.status == IdentityVerification.Status.VERIFIED
        if not card.pin_blocked:
            outcome = "PIN was not blocked"
        elif not verified:
            outcome = "identity verification required before unblocking"
        else:
            card.pin_blocked = False
            card.save(update_fields=["pin_blocked"])
            outcome = "PIN unblocked"
    return {**card_dict(card), "pin_outcome": outcome}


class NoArgs(ToolArgs):
    pass


def identity_status(ctx: ToolContext, a: NoArgs) -> dict:
    idv = IdentityVerification.objects.filter(customer=ctx.customer).first()
    if idv is None:
        return {"identity_status": "not_started", "identity_reason": ""}
    return {"identity_status": idv.status, "identity_reason": idv.reason}


class IncidentArgs(ToolArgs):
    component: str | None = Field(default=None, max_length=30)


def incident_status(ctx: ToolContext, a: IncidentArgs) -> dict:
    qs = ServiceIncident.objects.exclude(status=ServiceIncident.Status.RESOLVED)
    if a.component:
        qs = qs.filter(component__iexact=a.component)
    inc = qs.order_by("-started_at").first()
    if inc is None:
        return {"incident": "none", "incident_status": "no open incident"}
    return {"incident": inc.title, "incident_status": inc.status, "incident_message": inc.customer_message,
            "incident_since": inc.started_at.date().isoformat()}


class KbSearchArgs(ToolArgs):
    query: str = Field(default="", max_length=500)
    intent: str | None = Field(default=None, max_length=80)


def kb_search(ctx: ToolContext, a: KbSearchArgs) -> dict:
    art = None
    if a.intent:
        art = KnowledgeArticle.objects.filter(intents__contains=[a.intent]).order_by("slug").first()
    if art is None and a.query:
        words = [w for w in a.query.lower().split() if len(w) > 3][:8]
        cond = Q()
        for w in words:
            cond |= Q(title__icontains=w) | Q(body__icontains=w)
        if words:
            art = KnowledgeArticle.objects.filter(cond).order_by("slug").first()
    if art is None:
        return {"article": "none", "answer": ""}
    return {"article": art.title, "answer": art.body}


register(Tool("card_status", "technical", "Status of one of the customer's cards.", CardArgs, card_status))
register(Tool("freeze_card", "technical", "Freeze one of the customer's cards (needs approval).", CardArgs, freeze_card,
              effect=True, approval=lambda ctx, a: "card freeze"))
register(Tool("unfreeze_card", "technical", "Unfreeze one of the customer's frozen cards.", CardArgs, unfreeze_card,
              effect=True))
register(Tool("pin_unblock", "technical", "PIN unblock flow (identity must be verified).", CardArgs, unblock_pin,
              effect=True))
register(Tool("identity_verification_status", "technical", "The customer's identity-verification status.", NoArgs, identity_status))
register(Tool("incident_status", "technical", "Open service incidents, optionally for one component.", IncidentArgs,
              incident_status))
register(Tool("kb_search", "shared", "Search the knowledge base.", KbSearchArgs, kb_search))
