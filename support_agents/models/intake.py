from django.db import models

__all__ = ["IntakeSource", "InboundEvent", "InboundOutcome"]


class IntakeSource(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    # Newest first; every listed secret is accepted so senders can rotate without downtime.
    secrets = models.JSONField(default=list, blank=True, help_text='List of "whsec_<base64>" secrets')
    enabled = models.BooleanField(default=True)
    rejected_count = models.PositiveBigIntegerField(default=0, editable=False)
    last_rejected_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class InboundOutcome(models.TextChoices):
    ACCEPTED = "accepted", "Accepted (ticket created)"
    INVALID = "invalid", "Signed but invalid payload"


class InboundEvent(models.Model):
    source = models.ForeignKey(IntakeSource, on_delete=models.PROTECT, related_name="events")
    event_id = models.CharField(max_length=255)
    raw_body = models.TextField()
    received_at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=16, choices=InboundOutcome.choices, default=InboundOutcome.ACCEPTED)
    errors = models.JSONField(default=list, blank=True)
    ticket = models.ForeignKey(
        "support_agents.Ticket",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="inbound_events",
    )

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            # Idempotency rests on this constraint, not on a read-then-write check.
            models.UniqueConstraint(fields=["source", "event_id"], name="inbound_event_unique_id"),
        ]

    def __str__(self) -> str:
        return f"{self.source_id}:{self.event_id}"
