"""`POST /api/intake/<source>/`: Standard Webhooks delivery -> ticket. Thin: all logic is in services."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from support_agents.services import webhooks
from support_agents.services.intake import intake_receive, intake_reject, intake_source_get


def _error(status: int, detail: str, errors: dict | None = None) -> JsonResponse:
    body = {"detail": detail}
    if errors:
        body["errors"] = errors
    return JsonResponse(body, status=status)


@csrf_exempt
@require_POST
def intake_webhook(request: HttpRequest, source: str) -> JsonResponse:
    src = intake_source_get(source)
    if src is None:
        return _error(404, "unknown or disabled intake source")
    if request.content_type != "application/json":
        return _error(415, "content type must be application/json")
    limit = settings.INTAKE_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _error(400, "invalid Content-Length")
    if declared > limit:
        return _error(413, f"body larger than {limit} bytes")
    try:
        raw = request.body
    except RequestDataTooBig:
        return _error(413, f"body larger than {limit} bytes")
    if len(raw) > limit:
        return _error(413, f"body larger than {limit} bytes")
    event_id = request.headers.get("webhook-id")
    try:
        webhooks.verify(
            src.secrets,
            event_id,
            request.headers.get("webhook-timestamp"),
            request.headers.get("webhook-signature"),
            raw,
            tolerance_s=settings.INTAKE_TIMESTAMP_TOLERANCE_S,
        )
    except webhooks.SignatureError as exc:
        intake_reject(src, str(exc))
        return _error(401, "invalid or missing webhook signature")
    result = intake_receive(source=src, event_id=event_id, raw=raw)
    return JsonResponse(result.body, status=result.status_code)
