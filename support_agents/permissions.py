"""Roles are Django groups: `operators` work tickets, `admins` also configure agents and sources."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

OPERATORS = "operators"
ADMINS = "admins"


def _in_group(user: AbstractBaseUser | AnonymousUser, name: str) -> bool:
    return user.groups.filter(name=name).exists()


def is_admin(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or _in_group(user, ADMINS)


def is_operator(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Operators and admins may both work tickets."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or user.groups.filter(name__in=[OPERATORS, ADMINS]).exists()
