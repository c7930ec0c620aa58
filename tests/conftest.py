"""Shared fixtures. Services (PostgreSQL, Redis) are started by scripts/test.sh, never here."""

import functools

import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group

from support_agents.permissions import ADMINS, OPERATORS
from tests.helpers import DEMO_SECRET

PASSWORD = "correct-horse-battery-staple"


@functools.cache
def password_hash() -> str:
    # Hash once per session with the configured hasher: PBKDF2 per user costs ~0.3 s of shared CPU.
    return make_password(PASSWORD)


def make_user(django_user_model, username: str, **fields):
    user = django_user_model.objects.create(username=username, email=f"{username}@moedesk.test", **fields)
    user.password = password_hash()
    user.save(update_fields=["password"])
    return user


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def admin_user(db, django_user_model):
    user = make_user(django_user_model, "admin", is_staff=True, is_superuser=True)
    user.groups.add(Group.objects.get_or_create(name=ADMINS)[0])
    return user


@pytest.fixture
def operator_user(db, django_user_model):
    user = make_user(django_user_model, "operator")
    user.groups.add(Group.objects.get_or_create(name=OPERATORS)[0])
    return user


@pytest.fixture
def intake_source(db):
    from support_agents.models import IntakeSource

    return IntakeSource.objects.create(name="demo", secrets=[DEMO_SECRET])


@pytest.fixture
def customer(db):
    from support_agents.models import Customer

    return Customer.objects.create(email="jane.doe@example.com", name="Jane Doe")


@pytest.fixture
def agent_profiles(db):
    """The seeded billing/technical/sales profiles (re-created after a transactional flush)."""
    from support_agents.seed_data import agent_profiles_ensure

    return {p.slug: p for p in agent_profiles_ensure()}
