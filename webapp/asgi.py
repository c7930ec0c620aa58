"""ASGI entry point: `uvicorn webapp.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

import environ  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from webapp.intake import IntakeASGI  # noqa: E402

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app
# Intake webhooks skip Django's middleware stack (see webapp/intake.py); everything else goes to Django.
# INTAKE_THREADS threads per process each keep one database connection: keep it below DATABASE_POOL_MAX.
_env = environ.Env()
if _env.bool("INTAKE_FAST_PATH", default=True):
    http_app = IntakeASGI(http_app, threads=_env.int("INTAKE_THREADS", default=4))

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from webapp import routing  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(routing.websocket_urlpatterns))
        ),
    }
)
