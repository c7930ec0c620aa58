"""Serves the console's vendored JS/CSS (htmx, plotly.js) from the app directory, so the console
works under plain uvicorn with no CDN, no collectstatic and no extra middleware."""

from pathlib import Path

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control
from django.views.static import serve

STATIC_ROOT = Path(__file__).resolve().parent.parent / "static"


@cache_control(max_age=3600, public=True)
def asset(request: HttpRequest, path: str) -> HttpResponse:
    # serve() would also refuse escapes (as a logged SuspiciousFileOperation); a plain 404 is enough.
    if ".." in path.split("/") or path.startswith("/"):
        raise Http404("no such asset")
    return serve(request, path, document_root=STATIC_ROOT)
