from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from webapp.api import api
from webapp.intake import intake_webhook

urlpatterns = [
    path("", RedirectView.as_view(url="/console/", permanent=False)),
    path("api/intake/<str:source>/", intake_webhook, name="intake-webhook"),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("console/", include("webapp.console.urls")),
]
