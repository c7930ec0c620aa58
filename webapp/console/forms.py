"""Console forms. Field-level errors are rendered next to the fields; bad input is a 400, never a 500."""

from django import forms

from support_agents.models import DEFAULT_REPLY_RETRIES, Priority, Queue, TicketStatus

OPEN = "open"
STATUS_FILTERS = [("", "Any status"), (OPEN, "Open (not resolved)"), *TicketStatus.choices]
SORTS = [
    ("-created_at", "Newest first"),
    ("created_at", "Oldest first"),
    ("-updated_at", "Recently updated"),
    ("priority", "Priority (urgent first)"),
]


class InboxFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    status = forms.ChoiceField(required=False, choices=STATUS_FILTERS, initial=OPEN)
    queue = forms.ChoiceField(required=False, choices=[("", "Any queue"), ("none", "Unassigned"),
                                                       *[c for c in Queue.choices if c[0]]])
    priority = forms.ChoiceField(required=False, choices=[("", "Any priority"), *Priority.choices])
    intent = forms.CharField(required=False, max_length=100)
    sort = forms.ChoiceField(required=False, choices=SORTS)
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)


class SavedViewForm(forms.Form):
    name = forms.CharField(max_length=60)
    query = forms.CharField(max_length=1000, required=False)
    shared = forms.BooleanField(required=False)


class NoteForm(forms.Form):
    body = forms.CharField(max_length=10_000, widget=forms.Textarea(attrs={"rows": 3}))


class DraftForm(forms.Form):
    body = forms.CharField(max_length=10_000, required=False, widget=forms.Textarea(attrs={"rows": 6}))


class ReassignForm(forms.Form):
    agent = forms.ChoiceField(choices=[])

    def __init__(self, *args, agents: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].choices = agents


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=500)


class TimeRangeForm(forms.Form):
    RANGES = [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"),
              ("all", "All time")]
    range = forms.ChoiceField(choices=RANGES, required=False)
    agent = forms.CharField(required=False, max_length=32)


class AgentProfileForm(forms.Form):
    """Every agent setting; the service re-validates and versions the change."""

    enabled = forms.BooleanField(required=False)
    display_name = forms.CharField(max_length=100)
    system_prompt = forms.CharField(required=False, max_length=20_000, widget=forms.Textarea(attrs={"rows": 6}))
    model_path = forms.CharField(required=False, max_length=500,
                                 help_text="Checkpoint directory; empty = the shipped checkpoints/agent/")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=2048)
    temperature = forms.FloatField(min_value=0.0, max_value=5.0)
    top_p = forms.FloatField(min_value=0.01, max_value=1.0)
    seed = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    tool_calling = forms.ChoiceField(choices=[("procedure", "Procedure (operating procedures as data)"),
                                              ("free", "Free tool calling (model picks among allowed tools)")])
    reply_retries = forms.IntegerField(
        required=False, min_value=0, max_value=3,
        help_text="Procedure mode: sampled redrafts when the reply leaves out facts, before the fact template "
                  "(default 1; each costs one more model call)")
    tools = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple, choices=[])
    auto_send = forms.ChoiceField(choices=[])
    max_steps = forms.IntegerField(min_value=1, max_value=50)
    refund_approval_limit = forms.DecimalField(min_value=0, max_digits=12, decimal_places=2)
    confidence_threshold = forms.FloatField(min_value=0.0, max_value=1.0)

    def __init__(self, *args, tool_choices: list[str], auto_send_choices, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tools"].choices = [(t, t) for t in tool_choices]
        self.fields["auto_send"].choices = auto_send_choices

    def changes(self) -> dict:
        d = self.cleaned_data
        generation = {"max_new_tokens": d["max_new_tokens"], "temperature": d["temperature"], "top_p": d["top_p"],
                      "seed": d["seed"], "tool_calling": d["tool_calling"],
                      "reply_retries": DEFAULT_REPLY_RETRIES if d["reply_retries"] is None else d["reply_retries"]}
        return {
            "enabled": d["enabled"], "display_name": d["display_name"], "system_prompt": d["system_prompt"],
            "model_path": d["model_path"].strip(), "generation": generation, "tools": sorted(d["tools"]),
            "auto_send": d["auto_send"], "max_steps": d["max_steps"],
            "refund_approval_limit": d["refund_approval_limit"], "confidence_threshold": d["confidence_threshold"],
        }

    @classmethod
    def initial_for(cls, profile) -> dict:
        gen = profile.generation or {}
        return {
            "enabled": profile.enabled, "display_name": profile.display_name, "system_prompt": profile.system_prompt,
            "model_path": profile.model_path, "max_new_tokens": gen.get("max_new_tokens", 160),
            "temperature": gen.get("temperature", 0.0), "top_p": gen.get("top_p", 1.0), "seed": gen.get("seed"),
            "tool_calling": gen.get("tool_calling", "procedure"), "reply_retries": gen.get("reply_retries", DEFAULT_REPLY_RETRIES),
            "tools": list(profile.tools or []), "auto_send": profile.auto_send, "max_steps": profile.max_steps,
            "refund_approval_limit": profile.refund_approval_limit,
            "confidence_threshold": profile.confidence_threshold,
        }


class ProcedureForm(forms.Form):
    definition = forms.CharField(widget=forms.Textarea(attrs={"rows": 16, "class": "mono"}), max_length=100_000)

    def clean_definition(self) -> dict:
        import json

        try:
            value = json.loads(self.cleaned_data["definition"])
        except ValueError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise forms.ValidationError("the procedure must be a JSON object")
        return value


class PriceForm(forms.Form):
    gpu_price_per_hour = forms.DecimalField(min_value=0, max_digits=10, decimal_places=4, label="GPU price per hour")
    cpu_price_per_hour = forms.DecimalField(min_value=0, max_digits=10, decimal_places=4, label="CPU price per hour")
    currency = forms.RegexField(regex=r"^[A-Z]{3}$", max_length=3,
                                error_messages={"invalid": "use a 3-letter ISO currency code, e.g. USD"})


class IntakeSourceForm(forms.Form):
    name = forms.SlugField(max_length=64)
