"""Demo data for a fresh install: logins, the `demo` intake source, customers. Idempotent."""

import os
import random
import zlib
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from support_agents.models import Customer, IntakeSource
from support_agents.permissions import ADMINS, OPERATORS
from support_agents.seed_data import agent_profiles_ensure
from support_agents.services.audit import audit_log

# Known so the README's curl example works out of the box; override in any real deployment.
DEMO_SOURCE = "demo"
DEMO_SECRET_DEFAULT = "whsec_bW9lZGVzay1kZW1vLXNlY3JldC1kby1ub3QtdXNlIQ=="

FIRST = [
    "Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Sophia", "Elijah", "Mia", "Lucas",
    "Aisha", "Mateo", "Yuki", "Arjun", "Chloe", "Kwame", "Ingrid", "Diego", "Fatima", "Hiroshi",
    "Zara", "Tomasz", "Priya", "Sven", "Leila",
]  # fmt: skip
LAST = [
    "Smith", "Garcia", "Müller", "Okafor", "Nguyen", "Kowalski", "Rossi", "Tanaka", "Haddad",
    "Johansson", "Patel", "Dubois", "Silva", "Novak", "Andersen", "Kim", "O'Brien", "Fischer",
    "Mensah", "Costa",
]  # fmt: skip
DOMAINS = ["example.com", "example.org", "example.net"]


@dataclass
class DemoSeedResult:
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # (role, username, password or note)
    source: str = DEMO_SOURCE
    secret: str = ""
    customers: int = 0


def _ensure_user(username: str, password: str, *, admin: bool) -> str:
    User = get_user_model()
    user, created = User.objects.get_or_create(
        username=username,
        defaults={"email": f"{username}@moedesk.local", "is_staff": admin, "is_superuser": admin},
    )
    if created:
        user.set_password(password)
        user.save(update_fields=["password"])
    user.groups.add(Group.objects.get_or_create(name=ADMINS if admin else OPERATORS)[0])
    # Never reset a password on re-runs; only show the demo one while it still works.
    return password if created or user.check_password(password) else "(password changed since first run)"


def demo_customers(n: int = 50) -> list[tuple[str, str]]:
    """Deterministic (name, email) pairs."""
    rng = random.Random(77)
    out, seen = [], set()
    while len(out) < n:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = f"{first}.{last}".lower().replace("'", "").replace("ü", "ue")
        email = f"{local}@{rng.choice(DOMAINS)}"
        if email not in seen:
            seen.add(email)
            out.append((f"{first} {last}", email))
    return out


def demo_seed() -> DemoSeedResult:
    result = DemoSeedResult()
    with transaction.atomic():
        agent_profiles_ensure()
        admin_pw = os.environ.get("MOEDESK_ADMIN_PASSWORD", "moedesk-admin")
        operator_pw = os.environ.get("MOEDESK_OPERATOR_PASSWORD", "moedesk-operator")
        result.logins.append(("admin", "admin", _ensure_user("admin", admin_pw, admin=True)))
        result.logins.append(("operator", "operator", _ensure_user("operator", operator_pw, admin=False)))
        secret = os.environ.get("MOEDESK_DEMO_SECRET", DEMO_SECRET_DEFAULT)
        source, created = IntakeSource.objects.get_or_create(name=DEMO_SOURCE, defaults={"secrets": [secret]})
        if created:
            audit_log(actor="system", verb="intake_source.created", data={"source": DEMO_SOURCE})
        result.secret = source.secrets[0] if source.secrets else ""
        for name, email in demo_customers():
            Customer.objects.get_or_create(
                email=email,
                defaults={"name": name, "external_id": f"C-{zlib.crc32(email.encode()) % 10**6:06d}"},
            )
        result.customers = Customer.objects.count()
        from support_agents.services.bank_demo import bank_demo_seed  # pipeline: demo bank tables

        bank_demo_seed()
    return result
