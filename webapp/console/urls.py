from django.urls import path

from .views import admin, assets, dashboard, inbox, routing, tickets

app_name = "console"

urlpatterns = [
    path("", inbox.inbox, name="inbox"),
    path("inbox/rows/", inbox.inbox_rows, name="inbox_rows"),
    path("views/", inbox.saved_view_create, name="saved_view_create"),
    path("views/<int:view_id>/delete/", inbox.saved_view_delete, name="saved_view_delete"),
    path("tickets/<int:ticket_id>/", tickets.workspace, name="ticket"),
    path("tickets/<int:ticket_id>/panel/<str:panel>/", tickets.panel, name="ticket_panel"),
    path("tickets/<int:ticket_id>/note/", tickets.note_add, name="ticket_note"),
    path("tickets/<int:ticket_id>/draft/<int:message_id>/send/", tickets.draft_send, name="draft_send"),
    path("tickets/<int:ticket_id>/reassign/", tickets.reassign, name="ticket_reassign"),
    path("tickets/<int:ticket_id>/escalate/", tickets.escalate, name="ticket_escalate"),
    path("tickets/<int:ticket_id>/resolve/", tickets.resolve, name="ticket_resolve"),
    path("approvals/<int:approval_id>/<str:decision>/", tickets.approval_decide, name="approval_decide"),
    path("routing/", routing.overview, name="routing"),
    path("routing/steps/<int:step_id>/", routing.step, name="routing_step"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/panels/", dashboard.panels, name="dashboard_panels"),
    path("dashboard/export.csv", dashboard.export_csv, name="dashboard_csv"),
    path("admin/agents/", admin.agents, name="admin_agents"),
    path("admin/agents/<slug:slug>/", admin.agent_edit, name="admin_agent"),
    path("admin/agents/<slug:slug>/procedures/<int:procedure_id>/", admin.procedure_edit, name="admin_procedure"),
    path("admin/intake/", admin.intake_sources, name="admin_intake"),
    path("admin/intake/<int:source_id>/rotate/", admin.intake_rotate, name="admin_intake_rotate"),
    path("admin/prices/", admin.prices, name="admin_prices"),
    path("assets/<path:path>", assets.asset, name="asset"),
]
