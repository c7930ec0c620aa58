"""Role checks for console views: anonymous -> login page, signed in without the role -> 403."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from support_agents.permissions import is_admin, is_operator

View = Callable[..., HttpResponse]


def _require(check: Callable, what: str) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not check(request.user):
                raise PermissionDenied(f"{what} only")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


operator_required = _require(is_operator, "operators")
admin_required = _require(is_admin, "admins")
