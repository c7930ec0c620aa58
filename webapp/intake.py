"""`POST /api/intake/<source>/`: Standard Webhooks delivery -> ticket. Thin: all logic is in services.

Two doors lead to the same `answer_delivery`:

- `intake_webhook`, the Django view (URLconf, test client, any server that is not ours);
- `IntakeASGI`, which `webapp.asgi` puts in front of Django. A delivery through Django's ASGI handler
  cost ~15 hops between the event loop and worker threads (every sync middleware is adapted twice),
  a new thread and a pool checkout per request; intake needs none of that middleware (no session,
  auth, CSRF or HTML). The front reads the body on the event loop (stopping at the size limit) and
  makes exactly one hop to a small pool of threads that keep their database connection.
"""

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, JsonResponse
from django.http.request import split_domain_port, validate_host
from django.utils.http import parse_header_parameters
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from support_agents.services import webhooks
from support_agents.services.intake import intake_receive, intake_reject, intake_source_get

log = logging.getLogger("moedesk.intake")

Answer = tuple[int, dict[str, Any]]
WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def _error(status: int, detail: str, errors: dict | None = None) -> Answer:
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = errors
    return status, body


def answer_delivery(
    source_name: str,
    *,
    content_type: str,
    content_length: str | None,
    headers: Mapping[str, str],
    read_body: Callable[[], bytes | None],
) -> Answer:
    """The status and JSON body for one delivery. `read_body` returns None when the body is too big.

    The order of the checks is part of the contract: 404, 415, 400 (Content-Length), 413, 401.
    """
    src = intake_source_get(source_name)
    if src is None:
        return _error(404, "unknown or disabled intake source")
    if content_type != "application/json":
        return _error(415, "content type must be application/json")
    limit = settings.INTAKE_MAX_BODY_BYTES
    try:
        declared = int(content_length or 0)
    except ValueError:
        return _error(400, "invalid Content-Length")
    if declared > limit:
        return _error(413, f"body larger than {limit} bytes")
    raw = read_body()
    if raw is None or len(raw) > limit:
        return _error(413, f"body larger than {limit} bytes")
    event_id = headers.get("webhook-id")
    try:
        webhooks.verify(
            src.secrets,
            event_id,
            headers.get("webhook-timestamp"),
            headers.get("webhook-signature"),
            raw,
            tolerance_s=settings.INTAKE_TIMESTAMP_TOLERANCE_S,
        )
    except webhooks.SignatureError as exc:
        intake_reject(src, str(exc))
        return _error(401, "invalid or missing webhook signature")
    result = intake_receive(source=src, event_id=event_id, raw=raw)
    return result.status_code, result.body


@csrf_exempt
@require_POST
def intake_webhook(request: HttpRequest, source: str) -> JsonResponse:
    def read_body() -> bytes | None:
        try:
            return request.body
        except RequestDataTooBig:
            return None

    status, body = answer_delivery(
        source,
        content_type=request.content_type,
        content_length=request.META.get("CONTENT_LENGTH"),
        headers=request.headers,
        read_body=read_body,
    )
    return JsonResponse(body, status=status)


# ---------------------------------------------------------------------------------------------------
# ASGI front door

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
# Django's `<str:source>` converter: one non-empty path segment.
_INTAKE_PATH = re.compile(r"/api/intake/([^/]+)/")
_json_encoder = DjangoJSONEncoder(ensure_ascii=True, separators=(", ", ": "))


def _db_keep_or_close() -> None:
    """After a delivery: keep this thread's connection unless it is broken or was left mid-transaction.

    Pooled connections would otherwise go back to the pool after every request (Django closes them at
    request end); these threads are few and long-lived, so each simply keeps one. Without a pool,
    Django's own CONN_MAX_AGE rule applies.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.pool is None:
            conn.close_if_unusable_or_obsolete()
        elif connection_must_go(conn):
            conn.close()


def connection_must_go(conn: BaseDatabaseWrapper) -> bool:
    """Whether a kept connection cannot serve the next delivery (Django's rules minus the age limit)."""
    if conn.in_atomic_block or conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]:
        return True
    if conn.errors_occurred:
        if not conn.is_usable():
            return True
        conn.errors_occurred = False
    return False


class IntakeASGI:
    """Serves `POST /api/intake/<source>/` itself; every other request goes to `app` (Django)."""

    def __init__(self, app: ASGIApp, *, threads: int) -> None:
        self.app = app
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the threads' database connections and stop the threads (tests, shutdown).

        A later request starts a fresh pool.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        # Django connections belong to the thread that opened them: one task per thread closes them
        # (the barrier keeps a thread from taking two tasks).
        barrier = threading.Barrier(self.threads)

        def close_here() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=10)
            connections.close_all()

        for future in [executor.submit(close_here) for _ in range(self.threads)]:
            future.result()
        executor.shutdown()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="intake")
        return self._executor

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path") or ""
            if root and path.startswith(root):
                path = path[len(root) :]
            match = _INTAKE_PATH.fullmatch(path)
        if match is None:
            await self.app(scope, receive, send)
            return

        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            # Repeated headers are joined the way Django's ASGIRequest joins them.
            headers[name] = f"{headers[name]},{text}" if name in headers else text
        limit = settings.INTAKE_MAX_BODY_BYTES
        raw: bytes | None = None
        try:
            declared = int(headers.get("content-length") or 0)
        except ValueError:
            declared = 0  # answer_delivery reports the bad header
        if declared <= limit:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    break  # stop reading: the answer is 413 whatever the rest says
                chunks.append(chunk)
                if not message.get("more_body", False):
                    raw = b"".join(chunks)
                    break

        status, body = await _run_in(self._pool(), self._answer, scope, match.group(1), headers, raw)
        payload = _json_encoder.encode(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _answer(scope: dict, source_name: str, headers: dict[str, str], raw: bytes | None) -> Answer:
        try:
            host = headers.get("host") or (scope.get("server") or ("",))[0] or ""
            domain, _port = split_domain_port(host)
            allowed = settings.ALLOWED_HOSTS
            if settings.DEBUG and not allowed:
                allowed = [".localhost", "127.0.0.1", "[::1]"]  # Django's own DEBUG default
            if not domain or not validate_host(domain, allowed):
                # What Django answers for a DisallowedHost (its CommonMiddleware checks every request).
                log.warning("intake request for a disallowed host")
                return _error(400, "bad request")
            content_type, _params = parse_header_parameters(headers.get("content-type", ""))
            return answer_delivery(
                source_name,
                content_type=content_type,
                content_length=headers.get("content-length"),
                headers=headers,
                read_body=lambda: raw,
            )
        except Exception:
            log.exception("intake delivery failed", extra={"path": scope["path"]})
            return _error(500, "internal error")
        finally:
            _db_keep_or_close()


async def _run_in(executor: ThreadPoolExecutor, fn: Callable[..., Answer], *args: Any) -> Answer:
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
