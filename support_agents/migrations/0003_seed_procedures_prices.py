from decimal import Decimal

from django.db import migrations


def seed(apps, schema_editor):
    from support_agents.procedures.seed import procedures_seed

    procedures_seed(apps.get_model("support_agents", "AgentProfile"), apps.get_model("support_agents", "AgentProcedure"))
    PriceSetting = apps.get_model("support_agents", "PriceSetting")
    PriceSetting.objects.get_or_create(device="gpu", defaults={"price_per_hour": Decimal("2.00"), "currency": "USD"})
    PriceSetting.objects.get_or_create(device="cpu", defaults={"price_per_hour": Decimal("0.05"), "currency": "USD"})


class Migration(migrations.Migration):
    dependencies = [("support_agents", "0002_bank_and_runs")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
