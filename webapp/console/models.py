from django.conf import settings
from django.db import models


class SavedView(models.Model):
    """A named inbox filter (the query string of the inbox form), private or shared with the team."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(max_length=60)
    query = models.CharField(max_length=1000, blank=True)
    shared = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="savedview_owner_name")]

    def __str__(self) -> str:
        return self.name


class RoutingRollup(models.Model):
    """Expert-routing counts summed per hour, agent and model call name, so the routing overview
    reads a few hundred small rows instead of unnesting every step's routing JSON. Kept current by
    a post-commit hook on new model-call steps (signals.py); `rollups.rebuild()` recomputes it."""

    bucket = models.DateTimeField()  # hour start
    agent = models.ForeignKey("support_agents.AgentProfile", null=True, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=80)
    layers = models.PositiveIntegerField()
    experts = models.PositiveIntegerField()
    calls = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=list)  # [layers][experts]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "agent", "name", "layers", "experts"],
                                               name="routingrollup_key", nulls_distinct=False)]
        indexes = [models.Index(fields=["agent", "bucket"], name="routingrollup_agent_bucket")]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H}h {self.agent_id} {self.name}"
