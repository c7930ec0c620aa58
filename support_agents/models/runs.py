"""Agent runs and everything needed to audit and resume them from PostgreSQL.

A run's progress lives in `AgentRun.state` + `step_index`, never in a worker's memory: any worker
can pick a run up after a crash, an approval or a redelivery.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models


class AgentProcedure(models.Model):
    """One operating procedure per (agent, intent); the definition is data, edited in admin."""

    agent = models.ForeignKey("support_agents.AgentProfile", on_delete=models.CASCADE, related_name="procedures")
    intent = models.CharField(max_length=80)
    enabled = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1)
    definition = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "intent"], name="uniq_procedure_agent_intent")]
        ordering = ["agent_id", "intent"]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.intent} v{self.version}"


class AgentProfileVersion(models.Model):
    """Snapshot of an AgentProfile taken on every change; runs point at the one they used."""

    profile = models.ForeignKey("support_agents.AgentProfile", on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    snapshot = models.JSONField()
    changed_by = models.CharField(max_length=150, default="system")
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "version"], name="uniq_profile_version")]
        ordering = ["profile_id", "-version"]

    def __str__(self) -> str:
        return f"{self.profile_id} v{self.version}"


class PriceSetting(models.Model):
    class Device(models.TextChoices):
        GPU = "gpu"
        CPU = "cpu"

    device = models.CharField(max_length=8, choices=Device.choices, unique=True)
    price_per_hour = models.DecimalField(max_digits=10, decimal_places=4)
    currency = models.CharField(max_length=3, default="USD")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.device}: {self.price_per_hour} {self.currency}/h"


class AgentRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        AWAITING_APPROVAL = "awaiting_approval"
        COMPLETED = "completed"
        HANDED_OFF = "handed_off"
        ESCALATED = "escalated"
        FAILED = "failed"

    class Mode(models.TextChoices):
        PROCEDURE = "procedure"
        FREE = "free"

    TERMINAL = {Status.COMPLETED, Status.HANDED_OFF, Status.ESCALATED, Status.FAILED}

    ticket = models.ForeignKey("support_agents.Ticket", on_delete=models.CASCADE, related_name="runs")
    agent = models.ForeignKey("support_agents.AgentProfile", on_delete=models.PROTECT, related_name="runs")
    profile_version = models.ForeignKey(AgentProfileVersion, on_delete=models.SET_NULL, null=True, blank=True)
    procedure = models.ForeignKey(AgentProcedure, on_delete=models.SET_NULL, null=True, blank=True)
    intent = models.CharField(max_length=80, blank=True)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.PROCEDURE)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # Resumable state: extracted arguments, tool results, facts, the procedure snapshot in use.
    state = models.JSONField(default=dict, blank=True)
    step_index = models.PositiveIntegerField(default=0)
    # Deliveries of the run task, counted in the DB so a poison message cannot loop forever.
    attempts = models.PositiveIntegerField(default=0)
    context = models.JSONField(default=dict, blank=True)  # handoff summary the run started from
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["agent", "created_at"]), models.Index(fields=["ticket", "created_at"])]

    def __str__(self) -> str:
        return f"run {self.pk} {self.agent_id} {self.status}"


class RunStep(models.Model):
    class Kind(models.TextChoices):
        MODEL = "model"
        TOOL = "tool"
        APPROVAL = "approval"
        HANDOFF = "handoff"
        GUARDRAIL = "guardrail"
        REPLY = "reply"
        NOTE = "note"

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"
        REFUSED = "refused"
        WAITING = "waiting"
        SKIPPED = "skipped"

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=12, choices=Kind.choices)
    name = models.CharField(max_length=80)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # Model-call telemetry (zero for tool steps).
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(default=0)
    device_seconds = models.FloatField(default=0)
    device = models.CharField(max_length=8, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    flops = models.FloatField(default=0)
    dense_flops = models.FloatField(default=0)
    active_params = models.BigIntegerField(default=0)
    total_params = models.BigIntegerField(default=0)
    # {"expert_counts": [[...] per layer], "ids": [[[k ids] per layer] per token], "tokens": [...]}
    routing = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_id", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="uniq_run_step")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.index} {self.kind}:{self.name}"


class ToolInvocation(models.Model):
    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"
        REFUSED = "refused"
        INVALID = "invalid"
        PENDING_APPROVAL = "pending_approval"
        REJECTED = "rejected"

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="tool_calls")
    ticket = models.ForeignKey("support_agents.Ticket", on_delete=models.CASCADE, related_name="tool_calls")
    agent_slug = models.CharField(max_length=40)
    tool = models.CharField(max_length=60)
    step_index = models.PositiveIntegerField()
    # ticket + run + step: a redelivered task finds its own earlier call and reuses the result.
    idempotency_key = models.CharField(max_length=200, unique=True)
    args = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices)
    error = models.TextField(blank=True)
    has_effect = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["tool", "status"])]

    def __str__(self) -> str:
        return f"{self.tool} [{self.status}] {self.idempotency_key}"


class Approval(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="approvals")
    ticket = models.ForeignKey("support_agents.Ticket", on_delete=models.CASCADE, related_name="approvals")
    step_index = models.PositiveIntegerField()
    tool = models.CharField(max_length=60)
    args = models.JSONField(default=dict)
    edited_args = models.JSONField(null=True, blank=True)
    reason = models.CharField(max_length=300)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    decision_note = models.CharField(max_length=300, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "step_index"], name="uniq_approval_run_step")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"approval {self.pk} {self.tool} {self.status}"

    @property
    def effective_args(self) -> dict:
        return self.edited_args if self.edited_args is not None else self.args


class Handoff(models.Model):
    """Every move of a ticket between the router, agents and humans (null agent = router / human)."""

    ticket = models.ForeignKey("support_agents.Ticket", on_delete=models.CASCADE, related_name="handoffs")
    from_run = models.ForeignKey(AgentRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="handoffs_out")
    from_agent = models.ForeignKey("support_agents.AgentProfile", on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="handoffs_from")
    from_label = models.CharField(max_length=40)  # "router", "billing", "user:alice"
    to_agent = models.ForeignKey("support_agents.AgentProfile", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="handoffs_to")
    to_label = models.CharField(max_length=40)  # agent slug or "human"
    reason = models.CharField(max_length=300)
    context_summary = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.from_label} -> {self.to_label}"


__all__ = ["AgentProcedure", "AgentProfileVersion", "PriceSetting", "AgentRun", "RunStep", "ToolInvocation",
           "Approval", "Handoff"]
