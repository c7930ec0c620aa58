"""Ticket workspace: conversation, run timeline, handoff path, approvals, draft, actions.

The page is a set of live regions (`panel`) that re-render on websocket events. Actions are plain
POST forms (htmx-enhanced): on success the regions refresh; on bad input a 400 with the field
messages; on a state conflict (e.g. approving twice) a 409 saying why.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from support_agents.models import AgentProfile, Approval, AuthorKind, Message, Ticket
from support_agents.services import agents as agent_services
from support_agents.services.tickets import InvalidTransition, operator_message_post

from .. import routing_data, selectors
from ..access import operator_required
from ..forms import DraftForm, NoteForm, ReasonForm, ReassignForm

PANELS = ("head", "conversation", "activity")


def _ticket(ticket_id: int) -> Ticket:
    return get_object_or_404(Ticket.objects.select_related("customer", "assigned_agent"), pk=ticket_id)


def _agent_choices() -> list[tuple[str, str]]:
    return [(a.slug, a.display_name) for a in AgentProfile.objects.filter(enabled=True)]


def _panel_context(ticket: Ticket, panel: str) -> dict:
    ctx: dict = {"t": ticket}
    if panel == "head":
        ctx["approvals"] = list(ticket.approvals.filter(status=Approval.Status.PENDING).order_by("created_at"))
        for a in ctx["approvals"]:
            a.args_json = json.dumps(a.effective_args, indent=2, default=str)
        ctx["agents"] = _agent_choices()
        ctx["sla"], ctx["sla_left"] = selectors.sla_state(ticket)
    elif panel == "conversation":
        ctx["messages"] = list(ticket.messages.select_related("author_user"))
        ctx["drafts"] = [m for m in ctx["messages"] if m.is_draft]
    elif panel == "activity":
        ctx.update(selectors.ticket_activity(ticket))
        step = ctx["routed_step"]
        if step is not None:
            try:
                ctx["routed_fig"] = routing_data.step_figures(step.routing, label=step.name).get("heatmap")
            except ValueError:  # a malformed record shows no figure rather than breaking the page
                ctx["routed_fig"] = None
    else:
        raise Http404("no such panel")
    return ctx


@operator_required
def workspace(request: HttpRequest, ticket_id: int) -> HttpResponse:
    ticket = _ticket(ticket_id)
    ctx = {"t": ticket, "nav": "inbox", "note_form": NoteForm()}
    for panel in PANELS:
        ctx[panel] = _panel_context(ticket, panel)
    return render(request, "console/ticket.html", ctx)


@operator_required
def panel(request: HttpRequest, ticket_id: int, panel: str) -> HttpResponse:
    if panel not in PANELS:
        raise Http404("no such panel")
    ticket = _ticket(ticket_id)
    return render(request, f"console/partials/ticket_{panel}.html", {panel: _panel_context(ticket, panel), "t": ticket})


def _done(request: HttpRequest, ticket: Ticket, text: str) -> HttpResponse:
    if request.headers.get("HX-Request"):
        response = HttpResponse(f'<span class="ok">{text}</span>')
        response["HX-Trigger"] = "moedesk-refresh"
        return response
    messages.success(request, text)
    return redirect("console:ticket", ticket.pk)


def _refused(request: HttpRequest, ticket: Ticket, errors: dict | str, status: int = 400) -> HttpResponse:
    if isinstance(errors, str):
        errors = {"__all__": [errors]}
    if request.headers.get("HX-Request"):
        return render(request, "console/partials/form_errors.html", {"errors": errors}, status=status)
    flat = "; ".join(f"{k}: {' '.join(map(str, v))}" if k != "__all__" else " ".join(map(str, v))
                     for k, v in errors.items())
    messages.error(request, flat)
    return redirect("console:ticket", ticket.pk)


def _validation_errors(exc: ValidationError) -> dict:
    return exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}


@operator_required
@require_POST
def note_add(request: HttpRequest, ticket_id: int) -> HttpResponse:
    ticket = _ticket(ticket_id)
    form = NoteForm(request.POST)
    if not form.is_valid():
        return _refused(request, ticket, form.errors)
    operator_message_post(ticket=ticket, user=request.user, body=form.cleaned_data["body"], is_internal=True)
    return _done(request, ticket, "Note added.")


@operator_required
@require_POST
def draft_send(request: HttpRequest, ticket_id: int, message_id: int) -> HttpResponse:
    ticket = _ticket(ticket_id)
    draft = get_object_or_404(Message, pk=message_id, ticket=ticket, is_draft=True, author_kind=AuthorKind.AGENT)
    form = DraftForm(request.POST)
    if not form.is_valid():
        return _refused(request, ticket, form.errors)
    edited = form.cleaned_data["body"].strip()
    try:
        agent_services.reply_send(draft, request.user, edited_body=edited if edited and edited != draft.body else None)
    except ValidationError as exc:
        return _refused(request, ticket, _validation_errors(exc))
    except (InvalidTransition, ValueError) as exc:
        return _refused(request, ticket, str(exc), status=409)
    return _done(request, ticket, "Reply sent.")


@operator_required
@require_POST
def reassign(request: HttpRequest, ticket_id: int) -> HttpResponse:
    ticket = _ticket(ticket_id)
    form = ReassignForm(request.POST, agents=_agent_choices())
    if not form.is_valid():
        return _refused(request, ticket, form.errors)
    try:
        agent_services.ticket_reassign(ticket, form.cleaned_data["agent"], request.user)
    except ValidationError as exc:
        return _refused(request, ticket, _validation_errors(exc))
    except (InvalidTransition, ValueError) as exc:
        return _refused(request, ticket, str(exc), status=409)
    return _done(request, ticket, f"Reassigned to {form.cleaned_data['agent']}.")


@operator_required
@require_POST
def escalate(request: HttpRequest, ticket_id: int) -> HttpResponse:
    ticket = _ticket(ticket_id)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        return _refused(request, ticket, form.errors)
    try:
        agent_services.ticket_escalate(ticket, request.user, form.cleaned_data["reason"])
    except (InvalidTransition, ValueError) as exc:
        return _refused(request, ticket, str(exc), status=409)
    return _done(request, ticket, "Escalated to a human.")


@operator_required
@require_POST
def resolve(request: HttpRequest, ticket_id: int) -> HttpResponse:
    ticket = _ticket(ticket_id)
    try:
        agent_services.ticket_resolve(ticket, request.user)
    except (InvalidTransition, ValueError) as exc:
        return _refused(request, ticket, str(exc), status=409)
    return _done(request, ticket, "Resolved.")


@operator_required
@require_POST
def approval_decide(request: HttpRequest, approval_id: int, decision: str) -> HttpResponse:
    approval = get_object_or_404(Approval.objects.select_related("ticket"), pk=approval_id)
    ticket = approval.ticket
    if decision not in ("approve", "reject"):
        raise Http404("unknown decision")
    if approval.status != Approval.Status.PENDING:
        return _refused(request, ticket, f"this approval was already {approval.status}", status=409)
    try:
        if decision == "approve":
            edited = None
            raw = request.POST.get("args", "").strip()
            if raw:
                try:
                    edited = json.loads(raw)
                except ValueError as exc:
                    return _refused(request, ticket, {"args": [f"not valid JSON: {exc}"]})
                if not isinstance(edited, dict):
                    return _refused(request, ticket, {"args": ["must be a JSON object of tool arguments"]})
                if edited == approval.effective_args:
                    edited = None
            agent_services.approval_approve(approval, request.user, edited_args=edited)
        else:
            agent_services.approval_reject(approval, request.user, note=request.POST.get("note", "")[:300])
    except ValidationError as exc:
        return _refused(request, ticket, _validation_errors(exc))
    except (InvalidTransition, ValueError) as exc:
        return _refused(request, ticket, str(exc), status=409)
    return _done(request, ticket, "Approved — the run resumes." if decision == "approve" else "Rejected.")
