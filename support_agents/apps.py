from django.apps import AppConfig


class SupportAgentsConfig(AppConfig):
    name = "support_agents"
    verbose_name = "Support agents"
    default_auto_field = "django.db.models.BigAutoField"
