"""Administration pages: admins only; validated, versioned, audited changes."""

import json
from decimal import Decimal

import pytest

from support_agents.models import AgentProcedure, AgentProfile, AuditEvent, IntakeSource, PriceSetting

pytestmark = pytest.mark.django_db

ADMIN_PAGES = ("/console/admin/agents/", "/console/admin/agents/billing/", "/console/admin/intake/",
               "/console/admin/prices/")


@pytest.fixture
def adm(client, admin_user, agent_profiles):
    client.force_login(admin_user)
    return client


def _form(profile: AgentProfile, **over) -> dict:
    gen = profile.generation or {}
    data = {"enabled": "on", "display_name": profile.display_name, "system_prompt": profile.system_prompt,
            "model_path": profile.model_path, "max_new_tokens": gen.get("max_new_tokens", 160),
            "temperature": gen.get("temperature", 0.0), "top_p": gen.get("top_p", 1.0), "seed": 0,
            "tool_calling": "procedure", "tools": list(profile.tools), "auto_send": profile.auto_send,
            "max_steps": profile.max_steps, "refund_approval_limit": str(profile.refund_approval_limit),
            "confidence_threshold": profile.confidence_threshold}
    data.update(over)
    return data


def test_operator_is_refused_every_admin_page(client, operator_user, agent_profiles):
    client.force_login(operator_user)
    for url in ADMIN_PAGES:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {}).status_code == 403, url
    assert b"Administration" not in client.get("/console/").content


def test_admin_pages_render(adm):
    for url in ADMIN_PAGES:
        assert adm.get(url).status_code == 200, url


def test_agent_update_is_versioned_and_audited(adm):
    profile = AgentProfile.objects.get(slug="billing")
    r = adm.post("/console/admin/agents/billing/", _form(profile, refund_approval_limit="250.00", temperature="0.7",
                                                            system_prompt="Be brief."))
    assert r.status_code == 302
    profile.refresh_from_db()
    assert profile.refund_approval_limit == Decimal("250.00")
    assert profile.generation["temperature"] == 0.7 and profile.system_prompt == "Be brief."
    version = profile.versions.order_by("-version").first()
    assert version is not None and "refund_approval_limit" in version.changes
    assert version.changed_by == "user:admin"
    audit = AuditEvent.objects.filter(verb="agent.updated").latest("id")
    assert audit.data["agent"] == "billing" and audit.data["version"] == version.version
    page = adm.get("/console/admin/agents/billing/").content.decode()
    assert f"v{version.version}" in page


@pytest.mark.parametrize("field, value, message", [
    ("confidence_threshold", "1.5", "less than or equal to 1"),
    ("max_steps", "0", "greater than or equal to 1"),
    ("refund_approval_limit", "-1", "greater than or equal to 0"),
    ("tools", ["issue_refund", "launch_rockets"], "Select a valid choice"),
    ("model_path", "/nonexistent/ckpt", "no checkpoint"),
    ("display_name", "", "required"),
    ("reply_retries", "5", "less than or equal to 3"),
])
def test_agent_update_validation_is_field_level_400(adm, field, value, message):
    profile = AgentProfile.objects.get(slug="billing")
    versions = profile.versions.count()
    r = adm.post("/console/admin/agents/billing/", _form(profile, **{field: value}))
    assert r.status_code == 400
    assert message in r.content.decode()
    assert field in r.context["form"].errors
    assert profile.versions.count() == versions


def test_procedure_edit(adm):
    from support_agents.procedures.seed import procedures_seed

    procedures_seed(AgentProfile, AgentProcedure)
    proc = AgentProcedure.objects.filter(agent__slug="billing").first()
    url = f"/console/admin/agents/billing/procedures/{proc.pk}/"
    assert adm.get(url).status_code == 200
    r = adm.post(url, {"definition": "{broken"})
    assert r.status_code == 400 and "not valid JSON" in r.content.decode()
    r = adm.post(url, {"definition": json.dumps({"steps": [{"tool": "launch_rockets"}]})})
    assert r.status_code == 400 and "definition" in r.context["form"].errors
    before = proc.version
    r = adm.post(url, {"definition": json.dumps(proc.definition)})
    assert r.status_code == 302
    proc.refresh_from_db()
    assert proc.version == before + 1
    assert AuditEvent.objects.filter(verb="procedure.updated").exists()


def test_intake_create_and_rotate_shows_secret_once(adm):
    r = adm.post("/console/admin/intake/", {"name": "helpdesk"})
    assert r.status_code == 200 and "whsec_" in r.content.decode()
    source = IntakeSource.objects.get(name="helpdesk")
    assert len(source.secrets) == 1
    assert adm.post("/console/admin/intake/", {"name": "helpdesk"}).status_code == 400
    assert adm.post("/console/admin/intake/", {"name": "not a slug!"}).status_code == 400
    r = adm.post(f"/console/admin/intake/{source.pk}/rotate/", {"keep_old": "on"})
    source.refresh_from_db()
    assert len(source.secrets) == 2 and source.secrets[0] in r.content.decode()
    assert source.secrets[0] not in adm.get("/console/admin/intake/").content.decode()  # shown once only
    adm.post(f"/console/admin/intake/{source.pk}/rotate/", {})
    source.refresh_from_db()
    assert len(source.secrets) == 1
    assert AuditEvent.objects.filter(verb="intake_source.rotated").count() == 2


def test_prices(adm):
    r = adm.post("/console/admin/prices/", {"gpu_price_per_hour": "3.5", "cpu_price_per_hour": "0.1",
                                            "currency": "EUR"})
    assert r.status_code == 302
    assert PriceSetting.objects.get(device="gpu").price_per_hour == Decimal("3.5")
    assert PriceSetting.objects.get(device="cpu").currency == "EUR"
    assert AuditEvent.objects.filter(verb="prices.updated").exists()
    r = adm.post("/console/admin/prices/", {"gpu_price_per_hour": "-1", "cpu_price_per_hour": "x",
                                            "currency": "euro"})
    assert r.status_code == 400
    errors = r.context["form"].errors
    assert set(errors) == {"gpu_price_per_hour", "cpu_price_per_hour", "currency"}
