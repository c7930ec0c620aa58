import io
import re

import pytest
from django.core.management import CommandError, call_command

from support_agents.models import AuditEvent, Customer, IntakeSource
from support_agents.services.demo import DEMO_SECRET_DEFAULT


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_intake_source_lifecycle():
    out = run("intake_source", "create", "shop")
    secret = re.search(r"whsec_\S+", out).group(0)
    source = IntakeSource.objects.get(name="shop")
    assert source.secrets == [secret] and source.enabled
    assert "shop" in run("intake_source", "list")
    new = re.search(r"whsec_\S+", run("intake_source", "rotate", "shop")).group(0)
    source.refresh_from_db()
    assert source.secrets == [new, secret]
    only = re.search(r"whsec_\S+", run("intake_source", "rotate", "shop", "--drop-old")).group(0)
    source.refresh_from_db()
    assert source.secrets == [only]
    run("intake_source", "disable", "shop")
    source.refresh_from_db()
    assert not source.enabled
    assert AuditEvent.objects.filter(verb__startswith="intake_source.").count() == 4
    with pytest.raises(CommandError):
        run("intake_source", "create", "shop")
    with pytest.raises(CommandError):
        run("intake_source", "create", "Not A Slug")
    with pytest.raises(CommandError):
        run("intake_source", "rotate", "missing")


@pytest.mark.django_db
def test_seed_demo_is_idempotent():
    first = run("seed_demo")
    assert "admin / moedesk-admin" in first and "operator / moedesk-operator" in first
    assert DEMO_SECRET_DEFAULT in first
    customers = Customer.objects.count()
    assert customers == 50
    second = run("seed_demo")
    assert "admin / moedesk-admin" in second  # still the demo password: shown again, not reset
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-by-the-owner")
    admin.save()
    third = run("seed_demo")
    assert "admin / (password changed since first run)" in third
    admin.refresh_from_db()
    assert admin.check_password("changed-by-the-owner")
    assert Customer.objects.count() == customers and IntakeSource.objects.filter(name="demo").count() == 1
    emails = sorted(Customer.objects.values_list("email", flat=True))
    assert all("@example." in e for e in emails)


@pytest.mark.django_db
def test_api_token_command(operator_user, django_user_model):
    out = run("api_token", "create", "operator", "--name", "ci")
    assert re.search(r"mdk_\S+", out)
    django_user_model.objects.create(username="nobody")
    with pytest.raises(CommandError):
        run("api_token", "create", "nobody")
    prefix = run("api_token", "list").split()[0]
    assert "revoked" in run("api_token", "revoke", prefix)
