"""Default agent profiles and role groups (same values as migration 0001's seed).

`agent_profiles_ensure()` restores them where a test flush (TransactionTestCase) removed them.
"""

from decimal import Decimal

from django.contrib.auth.models import Group

from support_agents.models import AgentProfile
from support_agents.permissions import ADMINS, OPERATORS

DEFAULT_GENERATION = {"max_new_tokens": 160, "temperature": 0.0, "top_p": 1.0, "seed": 0}

AGENTS = [
    {
        "slug": "billing",
        "display_name": "Billing agent",
        "system_prompt": (
            "You are the billing agent of a retail bank. You explain charges and fees, look up card and"
            " transfer transactions, issue refunds within your limit and cancel pending transfers."
            " Never reveal data of other customers. Hand technical or sales questions to the right agent."
        ),
        "tools": ["lookup_transactions", "explain_fee", "issue_refund", "cancel_pending_transfer"],
        "refund_approval_limit": Decimal("100.00"),
    },
    {
        "slug": "technical",
        "display_name": "Technical agent",
        "system_prompt": (
            "You are the technical support agent of a retail bank. You check card status, freeze and"
            " unfreeze cards, guide PIN unblocking, check identity verification and service incidents,"
            " and search the knowledge base. Hand billing or sales questions to the right agent."
        ),
        "tools": [
            "card_status",
            "freeze_card",
            "unfreeze_card",
            "pin_unblock",
            "identity_verification_status",
            "incident_status",
            "kb_search",
        ],
        "refund_approval_limit": Decimal("0.00"),
    },
    {
        "slug": "sales",
        "display_name": "Sales agent",
        "system_prompt": (
            "You are the sales agent of a retail bank. You answer questions about products, pricing,"
            " limits and supported countries and currencies, record leads and order cards."
            " Hand billing or technical questions to the right agent."
        ),
        "tools": ["products_pricing", "product_limits", "supported_countries", "create_lead", "order_card"],
        "refund_approval_limit": Decimal("0.00"),
    },
]


def agent_profiles_ensure() -> list[AgentProfile]:
    """Create missing default profiles and groups; never overwrites an existing profile."""
    profiles = []
    for spec in AGENTS:
        profile, _ = AgentProfile.objects.get_or_create(
            slug=spec["slug"],
            defaults={
                "display_name": spec["display_name"],
                "system_prompt": spec["system_prompt"],
                "tools": list(spec["tools"]),
                "refund_approval_limit": spec["refund_approval_limit"],
                "queue": spec["slug"],
                "generation": dict(DEFAULT_GENERATION),
            },
        )
        profiles.append(profile)
    for name in (OPERATORS, ADMINS):
        Group.objects.get_or_create(name=name)
    return profiles
