"""Inbox: filtered, paginated ticket list that refreshes itself when live events arrive."""

from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from support_agents.models import Queue

from .. import selectors
from ..access import operator_required
from ..forms import OPEN, InboxFilterForm, SavedViewForm
from ..models import SavedView

PAGE_SIZE = 25


def _inbox_context(request: HttpRequest) -> dict:
    form = InboxFilterForm(request.GET or {"status": OPEN})
    if not form.is_valid():
        return {"form": form, "errors": form.errors}
    data = form.cleaned_data
    qs = selectors.inbox_tickets(q=data["q"].strip(), status=data["status"], queue=data["queue"],
                                 priority=data["priority"], intent=data["intent"].strip(),
                                 sort=data["sort"] or "-created_at")
    page = Paginator(qs, PAGE_SIZE).get_page(data["page"] or 1)
    now = timezone.now()
    rows = []
    for ticket in page.object_list:
        sla, left = selectors.sla_state(ticket, now)
        rows.append({"t": ticket, "age": now - ticket.created_at, "sla": sla, "sla_left": left})
    params = {k: v for k, v in request.GET.items() if k != "page" and v}
    return {"form": form, "page": page, "rows": rows, "query": urlencode(params)}


@operator_required
def inbox(request: HttpRequest) -> HttpResponse:
    ctx = _inbox_context(request)
    ctx.update(
        counts=selectors.queue_counts(),
        queues=[c for c in Queue.choices if c[0]],
        intents=selectors.known_intents(),
        saved_views=SavedView.objects.filter(Q(owner=request.user) | Q(shared=True)).select_related("owner"),
    )
    status = 400 if "errors" in ctx else 200
    return render(request, "console/inbox.html", ctx, status=status)


@operator_required
def inbox_rows(request: HttpRequest) -> HttpResponse:
    """The list + counts partial that htmx swaps in on filter changes and live events."""
    ctx = _inbox_context(request)
    ctx["counts"] = selectors.queue_counts()
    ctx["queues"] = [c for c in Queue.choices if c[0]]
    return render(request, "console/partials/inbox_rows.html", ctx, status=400 if "errors" in ctx else 200)


@operator_required
@require_POST
def saved_view_create(request: HttpRequest) -> HttpResponse:
    form = SavedViewForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(form.errors.as_text(), content_type="text/plain")
    SavedView.objects.update_or_create(
        owner=request.user, name=form.cleaned_data["name"],
        defaults={"query": form.cleaned_data["query"], "shared": form.cleaned_data["shared"]},
    )
    messages.success(request, f"Saved view “{form.cleaned_data['name']}”.")
    return redirect(f"/console/?{form.cleaned_data['query']}")


@operator_required
@require_POST
def saved_view_delete(request: HttpRequest, view_id: int) -> HttpResponse:
    view = get_object_or_404(SavedView, pk=view_id, owner=request.user)
    view.delete()
    return redirect("console:inbox")
