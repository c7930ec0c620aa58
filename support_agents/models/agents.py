from decimal import Decimal

from django.db import models

__all__ = ["DEFAULT_REPLY_RETRIES", "AgentProfile", "AgentSlug", "AutoSend"]


class AgentSlug(models.TextChoices):
    BILLING = "billing", "Billing"
    TECHNICAL = "technical", "Technical"
    SALES = "sales", "Sales"


class AutoSend(models.TextChoices):
    NEVER = "never", "Drafts only (an operator sends)"
    CONFIDENT = "confident", "Send when confident and no approval was needed"
    ALWAYS = "always", "Always send"


# Sampled redrafts of a reply the pipeline cannot keep, before the fact template (generation
# "reply_retries"; profiles saved before the setting existed have no key).
DEFAULT_REPLY_RETRIES = 1


def default_generation() -> dict:
    return {"max_new_tokens": 160, "temperature": 0.0, "top_p": 1.0, "seed": 0}


class AgentProfile(models.Model):
    slug = models.SlugField(max_length=32, unique=True)
    display_name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    system_prompt = models.TextField(blank=True)
    # "" means the shipped checkpoint (checkpoints/agent/).
    model_path = models.CharField(max_length=500, blank=True, default="")
    generation = models.JSONField(default=default_generation, blank=True)
    tools = models.JSONField(default=list, blank=True, help_text="Allow-list of tool names")
    auto_send = models.CharField(max_length=16, choices=AutoSend.choices, default=AutoSend.NEVER)
    max_steps = models.PositiveIntegerField(default=8)
    refund_approval_limit = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("100.00"))
    confidence_threshold = models.FloatField(default=0.5)
    queue = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.display_name or self.slug
