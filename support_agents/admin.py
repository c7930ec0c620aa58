from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from support_agents.models import (
    AgentProfile,
    ApiToken,
    AuditEvent,
    Customer,
    InboundEvent,
    IntakeSource,
    Message,
    Ticket,
)
from support_agents.services.audit import actor_for_user
from support_agents.services.intake import intake_source_rotate


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["email", "name", "external_id", "created_at"]
    search_fields = ["email", "name", "external_id"]
    date_hierarchy = "created_at"


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ["created_at", "author_kind", "author_name", "is_internal", "is_draft", "body"]
    readonly_fields = ["created_at"]


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = [
        "reference",
        "subject",
        "status",
        "queue",
        "intent",
        "priority",
        "confidence",
        "channel",
        "customer",
        "assigned_agent",
        "created_at",
    ]
    list_filter = ["status", "queue", "priority", "channel", "assigned_agent", "source", "created_at"]
    search_fields = ["id", "subject", "body", "intent", "customer__email", "customer__name"]
    list_select_related = ["customer", "assigned_agent"]
    raw_id_fields = ["customer"]
    # Status changes must go through ticket_transition (validation + audit), never a form field.
    readonly_fields = ["reference", "status", "status_reason", "created_at", "updated_at"]
    date_hierarchy = "created_at"
    inlines = [MessageInline]

    @admin.display(description="Reference", ordering="id")
    def reference(self, obj: Ticket) -> str:
        return obj.reference

    def get_search_results(self, request, queryset, search_term):
        ticket_id = Ticket.id_from_reference(search_term) if search_term.upper().startswith("TCK-") else None
        if ticket_id is not None:
            return queryset.filter(pk=ticket_id), False
        return super().get_search_results(request, queryset, search_term)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "ticket", "author_kind", "author_name", "is_internal", "is_draft", "created_at"]
    list_filter = ["author_kind", "is_internal", "is_draft", "created_at"]
    search_fields = ["body", "author_name", "ticket__subject"]
    raw_id_fields = ["ticket", "author_user"]


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "display_name",
        "enabled",
        "queue",
        "auto_send",
        "max_steps",
        "refund_approval_limit",
        "confidence_threshold",
        "updated_at",
    ]
    list_filter = ["enabled", "auto_send"]
    search_fields = ["slug", "display_name", "system_prompt"]


@admin.register(IntakeSource)
class IntakeSourceAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "secret_count", "rejected_count", "last_rejected_at", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    readonly_fields = ["rejected_count", "last_rejected_at", "created_at"]
    actions = ["rotate_secret"]

    @admin.display(description="Secrets")
    def secret_count(self, obj: IntakeSource) -> int:
        return len(obj.secrets or [])

    @admin.action(description="Rotate signing secret (old ones stay valid)")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[IntakeSource]) -> None:
        for source in queryset:
            secret = intake_source_rotate(source=source, actor=actor_for_user(request.user))
            # Shown once, like the CLI; stored only in the source row.
            self.message_user(request, f"{source.name}: new secret {secret}", messages.WARNING)


@admin.register(InboundEvent)
class InboundEventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "source", "outcome", "ticket", "received_at"]
    list_filter = ["source", "outcome", "received_at"]
    search_fields = ["event_id"]
    raw_id_fields = ["ticket"]
    readonly_fields = ["source", "event_id", "raw_body", "received_at", "outcome", "errors", "ticket"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "verb", "ticket"]
    list_filter = ["verb", "at"]
    search_fields = ["actor", "verb", "ticket__id"]
    list_select_related = ["ticket"]
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "revoked", "created_at", "last_used_at"]
    list_filter = ["revoked"]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at", "user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created with `manage.py api_token create` so the key is shown once


from support_agents import admin_pipeline  # noqa: E402, F401  (pipeline models: procedures, runs, bank)
