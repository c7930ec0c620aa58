from django.conf import settings
from django.db import models

__all__ = [
    "ALLOWED_TRANSITIONS",
    "AuthorKind",
    "Channel",
    "Customer",
    "Message",
    "Priority",
    "Queue",
    "Ticket",
    "TicketStatus",
]

REFERENCE_PREFIX = "TCK-"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    CHAT = "chat", "Chat"
    WEB = "web", "Web form"


class TicketStatus(models.TextChoices):
    NEW = "new", "New"
    TRIAGING = "triaging", "Triaging"
    NEEDS_TRIAGE = "needs_triage", "Needs human triage"
    QUEUED = "queued", "Queued for agent"
    IN_PROGRESS = "in_progress", "In progress"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    RETRYING = "retrying", "Retrying"
    DRAFT_READY = "draft_ready", "Draft ready"
    REPLIED = "replied", "Replied"
    ESCALATED = "escalated", "Escalated to human"
    FAILED = "failed", "Failed"
    RESOLVED = "resolved", "Resolved"


S = TicketStatus
# The only place that says which status may follow which; enforced by services.ticket_transition.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.NEW: frozenset({S.TRIAGING}),
    S.TRIAGING: frozenset({S.QUEUED, S.NEEDS_TRIAGE, S.FAILED, S.RETRYING}),
    S.RETRYING: frozenset({S.TRIAGING, S.IN_PROGRESS, S.FAILED, S.ESCALATED}),
    S.NEEDS_TRIAGE: frozenset({S.QUEUED, S.ESCALATED, S.RESOLVED}),
    S.QUEUED: frozenset({S.IN_PROGRESS, S.ESCALATED, S.NEEDS_TRIAGE}),
    S.IN_PROGRESS: frozenset(
        {S.DRAFT_READY, S.AWAITING_APPROVAL, S.QUEUED, S.ESCALATED, S.FAILED, S.RETRYING, S.REPLIED}
    ),
    S.AWAITING_APPROVAL: frozenset({S.IN_PROGRESS, S.ESCALATED}),
    S.DRAFT_READY: frozenset({S.REPLIED, S.IN_PROGRESS, S.ESCALATED, S.RESOLVED}),
    S.REPLIED: frozenset({S.RESOLVED, S.IN_PROGRESS, S.ESCALATED}),
    S.ESCALATED: frozenset({S.QUEUED, S.IN_PROGRESS, S.RESOLVED}),
    S.FAILED: frozenset({S.QUEUED, S.ESCALATED, S.RESOLVED}),
    S.RESOLVED: frozenset({S.IN_PROGRESS}),
}
del S


class Queue(models.TextChoices):
    NONE = "", "(none)"
    BILLING = "billing", "Billing"
    TECHNICAL = "technical", "Technical"
    SALES = "sales", "Sales"
    HUMAN = "human", "Human"


class Priority(models.TextChoices):
    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


class AuthorKind(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    AGENT = "agent", "Agent"
    OPERATOR = "operator", "Operator"
    SYSTEM = "system", "System"


class Customer(models.Model):
    email = models.EmailField(max_length=254, unique=True)  # stored lower-cased by services
    name = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=200, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.name or self.email


class Ticket(models.Model):
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField()
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.WEB)
    status = models.CharField(max_length=32, choices=TicketStatus.choices, default=TicketStatus.NEW)
    status_reason = models.CharField(max_length=500, blank=True)
    queue = models.CharField(max_length=16, choices=Queue.choices, default=Queue.NONE, blank=True)
    intent = models.CharField(max_length=100, blank=True)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    confidence = models.FloatField(null=True, blank=True)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="tickets")
    assigned_agent = models.ForeignKey(
        "support_agents.AgentProfile",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tickets",
    )
    source = models.ForeignKey(
        "support_agents.IntakeSource",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tickets",
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at"], name="ticket_created"),
            models.Index(fields=["status", "-created_at"], name="ticket_status_created"),
            models.Index(fields=["queue", "status", "-created_at"], name="ticket_queue_status_created"),
        ]

    def __str__(self) -> str:
        return f"{self.reference} {self.subject}"

    @property
    def reference(self) -> str:
        return f"{REFERENCE_PREFIX}{self.pk:06d}" if self.pk else f"{REFERENCE_PREFIX}?"

    @staticmethod
    def id_from_reference(reference: str) -> int | None:
        """`TCK-000123` (or `123`) -> 123; None when it is not a reference."""
        ref = reference.strip().upper().removeprefix(REFERENCE_PREFIX)
        return int(ref) if ref.isdigit() and len(ref) < 19 else None


class Message(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="messages")
    author_kind = models.CharField(max_length=16, choices=AuthorKind.choices)
    author_name = models.CharField(max_length=200, blank=True)
    author_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    is_internal = models.BooleanField(default=False, help_text="Internal note, never shown to the customer")
    is_draft = models.BooleanField(default=False, help_text="Reply draft not yet sent")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["ticket", "created_at"], name="message_ticket_created")]

    def __str__(self) -> str:
        return f"{self.author_kind} on {self.ticket_id}"
