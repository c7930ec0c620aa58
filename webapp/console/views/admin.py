"""Administration (admins only): agent settings and procedures, intake sources, prices.

Every change goes through the owning service, which validates, versions and audits it."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from support_agents.models import AgentProcedure, AgentProfile, AutoSend, IntakeSource
from support_agents.services import agents as agent_services
from support_agents.services import intake as intake_services
from support_agents.services.audit import actor_for_user
from support_agents.tools.base import tool_names

from .. import services
from ..access import admin_required
from ..forms import AgentProfileForm, IntakeSourceForm, PriceForm, ProcedureForm


@admin_required
def agents(request: HttpRequest) -> HttpResponse:
    profiles = AgentProfile.objects.prefetch_related("procedures").order_by("slug")
    return render(request, "console/admin_agents.html", {"nav": "admin", "profiles": profiles})


def _apply_errors(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errs in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errs)
    else:
        form.add_error(None, exc.messages)


@admin_required
def agent_edit(request: HttpRequest, slug: str) -> HttpResponse:
    profile = get_object_or_404(AgentProfile, slug=slug)
    kwargs = {"tool_choices": tool_names(), "auto_send_choices": AutoSend.choices}
    status = 200
    if request.method == "POST":
        form = AgentProfileForm(request.POST, **kwargs)
        if form.is_valid():
            try:
                agent_services.agent_profile_update(profile, request.user, **form.changes())
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                messages.success(request, f"Saved {profile.slug}: the next run uses the new settings.")
                return redirect("console:admin_agent", slug=profile.slug)
        status = 400
    else:
        form = AgentProfileForm(initial=AgentProfileForm.initial_for(profile), **kwargs)
    versions = profile.versions.order_by("-version")[:20]
    return render(request, "console/admin_agent.html", {
        "nav": "admin", "profile": profile, "form": form, "versions": versions,
        "procedures": profile.procedures.order_by("intent"),
    }, status=status)


@admin_required
def procedure_edit(request: HttpRequest, slug: str, procedure_id: int) -> HttpResponse:
    procedure = get_object_or_404(AgentProcedure.objects.select_related("agent"), pk=procedure_id, agent__slug=slug)
    status = 200
    if request.method == "POST":
        form = ProcedureForm(request.POST)
        if form.is_valid():
            try:
                agent_services.procedure_update(procedure, request.user, form.cleaned_data["definition"])
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                messages.success(request, f"Saved procedure {procedure.intent}.")
                return redirect("console:admin_procedure", slug=slug, procedure_id=procedure.pk)
        status = 400
    else:
        form = ProcedureForm(initial={"definition": json.dumps(procedure.definition, indent=2)})
    return render(request, "console/admin_procedure.html",
                  {"nav": "admin", "procedure": procedure, "form": form}, status=status)


@admin_required
def intake_sources(request: HttpRequest) -> HttpResponse:
    status, new_secret = 200, None
    form = IntakeSourceForm()
    if request.method == "POST":
        form = IntakeSourceForm(request.POST)
        if form.is_valid():
            try:
                source, new_secret = intake_services.intake_source_create(
                    name=form.cleaned_data["name"], actor=actor_for_user(request.user))
            except IntegrityError:
                form.add_error("name", "a source with this name already exists")
                status = 400
            else:
                new_secret = {"source": source.name, "secret": new_secret}
                form = IntakeSourceForm()
        else:
            status = 400
    return render(request, "console/admin_intake.html", {
        "nav": "admin", "sources": IntakeSource.objects.order_by("name"), "form": form, "new_secret": new_secret,
    }, status=status)


@admin_required
def intake_rotate(request: HttpRequest, source_id: int) -> HttpResponse:
    source = get_object_or_404(IntakeSource, pk=source_id)
    if request.method != "POST":
        return redirect("console:admin_intake")
    keep_old = request.POST.get("keep_old") == "on"
    secret = intake_services.intake_source_rotate(source=source, keep_old=keep_old, actor=actor_for_user(request.user))
    # The new secret is shown exactly once; it is never rendered again.
    return render(request, "console/admin_intake.html", {
        "nav": "admin", "sources": IntakeSource.objects.order_by("name"), "form": IntakeSourceForm(),
        "new_secret": {"source": source.name, "secret": secret, "kept_old": keep_old},
    })


@admin_required
def prices(request: HttpRequest) -> HttpResponse:
    current = services.price_settings()
    status = 200
    if request.method == "POST":
        form = PriceForm(request.POST)
        if form.is_valid():
            d = form.cleaned_data
            try:
                services.price_settings_update(request.user, gpu=d["gpu_price_per_hour"],
                                               cpu=d["cpu_price_per_hour"], currency=d["currency"])
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                messages.success(request, "Prices saved; new model calls are costed with them.")
                return redirect("console:admin_prices")
        status = 400
    else:
        form = PriceForm(initial=current)
    return render(request, "console/admin_prices.html", {"nav": "admin", "form": form, "current": current},
                  status=status)
