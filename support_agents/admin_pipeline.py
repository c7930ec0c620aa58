"""Admin for the pipeline's models (imported from support_agents/admin.py)."""
from __future__ import annotations

from django import forms
from django.contrib import admin

from support_agents import versioning  # noqa: F401  (versions AgentProfile saves made in admin)
from support_agents.models import (
    Account,
    AgentProcedure,
    AgentProfileVersion,
    AgentRun,
    Approval,
    Card,
    CardOrder,
    FeeSchedule,
    Handoff,
    KnowledgeArticle,
    PendingTransfer,
    PriceSetting,
    Product,
    ProductLimit,
    Refund,
    RunStep,
    SalesLead,
    ServiceIncident,
    SupportedCountry,
    SupportedCurrency,
    ToolInvocation,
    Transaction,
)


class ProcedureForm(forms.ModelForm):
    class Meta:
        model = AgentProcedure
        fields = ["agent", "intent", "enabled", "definition"]

    def clean_definition(self) -> dict:
        from support_agents.language import FIELDS
        from support_agents.models import AgentProfile
        from support_agents.procedures import validate_definition
        from support_agents.tools import REGISTRY

        d = self.cleaned_data["definition"]
        errs = validate_definition(d, tools=set(REGISTRY), fields=set(FIELDS),
                                   agents=set(AgentProfile.objects.values_list("slug", flat=True)))
        if errs:
            raise forms.ValidationError(errs)
        return d


@admin.register(AgentProcedure)
class AgentProcedureAdmin(admin.ModelAdmin):
    form = ProcedureForm
    list_display = ["intent", "agent", "enabled", "version", "updated_at"]
    list_filter = ["agent", "enabled"]
    search_fields = ["intent"]

    def save_model(self, request, obj, form, change) -> None:  # noqa: ANN001
        if change and "definition" in form.changed_data:
            obj.version += 1
        super().save_model(request, obj, form, change)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Run records are evidence: visible in admin, never edited there."""

    def has_add_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


class RunStepInline(admin.TabularInline):
    model = RunStep
    fields = ["index", "kind", "name", "status", "prompt_tokens", "completion_tokens", "latency_ms", "cost", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(AgentRun)
class AgentRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "ticket", "agent", "intent", "mode", "status", "attempts", "created_at"]
    list_filter = ["status", "agent", "mode"]
    search_fields = ["intent", "ticket__subject"]
    inlines = [RunStepInline]


@admin.register(ToolInvocation)
class ToolInvocationAdmin(ReadOnlyAdmin):
    list_display = ["tool", "agent_slug", "status", "ticket", "idempotency_key", "created_at"]
    list_filter = ["status", "tool", "agent_slug"]


@admin.register(Handoff)
class HandoffAdmin(ReadOnlyAdmin):
    list_display = ["ticket", "from_label", "to_label", "reason", "at"]
    list_filter = ["from_label", "to_label"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["id", "ticket", "tool", "status", "reason", "decided_by", "created_at"]
    list_filter = ["status", "tool"]


@admin.register(AgentProfileVersion)
class AgentProfileVersionAdmin(ReadOnlyAdmin):
    list_display = ["profile", "version", "changed_by", "created_at"]
    list_filter = ["profile"]


@admin.register(PriceSetting)
class PriceSettingAdmin(admin.ModelAdmin):
    list_display = ["device", "price_per_hour", "currency", "updated_at"]


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
    list_display = ["reference", "account", "kind", "merchant", "amount", "currency", "status", "created_at"]
    list_filter = ["kind", "status"]
    search_fields = ["reference", "merchant", "account__customer__email"]


@admin.register(Card)
class CardAdmin(admin.ModelAdmin):
    list_display = ["last4", "customer", "kind", "network", "status", "pin_blocked", "expires_on"]
    list_filter = ["status", "kind"]
    search_fields = ["last4", "customer__email"]


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["number", "customer", "currency", "balance", "status"]
    search_fields = ["number", "customer__email"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "kind", "monthly_fee", "issue_fee", "currency"]


for model in (FeeSchedule, Refund, PendingTransfer, ProductLimit, SupportedCountry, SupportedCurrency,
              ServiceIncident, KnowledgeArticle, SalesLead, CardOrder):
    admin.site.register(model)
