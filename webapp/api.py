"""REST API (django-ninja). OpenAPI: /api/openapi.json, interactive docs: /api/docs.

Auth: the console session (with CSRF for writes) or `Authorization: Bearer mdk_...` from
`manage.py api_token create USER`. Only operators and admins may use it.
"""

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer, SessionAuth
from pydantic import field_validator

from support_agents.models import Channel, Priority, Queue, TicketStatus
from support_agents.permissions import is_operator
from support_agents.selectors.tickets import ticket_get_by_reference, ticket_list, ticket_messages
from support_agents.services.tickets import operator_message_post
from support_agents.services.tokens import api_token_authenticate


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = api_token_authenticate(token)
        if user is not None:
            request.user = user
        return user


api = NinjaAPI(
    title="MoEDesk API",
    version="1",
    description="Tickets of the MoEDesk support desk. Intake webhooks live at POST /api/intake/<source>/.",
    auth=[TokenAuth(), SessionAuth()],
    urls_namespace="api",
)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError):
    # Field-level messages as 400, same shape as the intake endpoint.
    errors: dict[str, list[str]] = {}
    for err in exc.errors:
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        if loc and loc[0] in ("payload", "filters"):
            loc = loc[1:]
        errors.setdefault(".".join(loc) or "request", []).append(err.get("msg", "invalid"))
    return api.create_response(request, {"detail": "invalid request", "errors": errors}, status=400)


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError):
    return api.create_response(request, {"detail": "authentication required"}, status=401)


def _operator(request: HttpRequest) -> Any:
    user = request.auth
    if not is_operator(user):
        raise HttpError(403, "operators only")
    return user


class CustomerOut(Schema):
    email: str
    name: str
    external_id: str


class TicketOut(Schema):
    reference: str
    subject: str
    status: TicketStatus
    status_reason: str
    queue: str
    intent: str
    priority: Priority
    confidence: float | None
    channel: Channel
    customer: CustomerOut
    assigned_agent: str | None = None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_assigned_agent(obj) -> str | None:
        return obj.assigned_agent.slug if obj.assigned_agent_id else None


class MessageOut(Schema):
    id: int
    author_kind: str
    author_name: str
    body: str
    is_internal: bool
    is_draft: bool
    created_at: datetime


class TicketDetailOut(TicketOut):
    body: str
    metadata: dict
    messages: list[MessageOut]

    @staticmethod
    def resolve_messages(obj) -> list:
        return list(ticket_messages(obj))


class TicketPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[TicketOut]


class TicketFilters(Schema):
    status: list[TicketStatus] | None = None
    queue: Queue | None = None
    priority: Priority | None = None
    channel: Channel | None = None
    intent: str | None = Field(None, max_length=100)
    customer: str | None = Field(None, max_length=254, description="customer email")
    q: str | None = Field(None, max_length=200, description="search subject, body, email or TCK- reference")
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class MessageIn(Schema):
    body: str = Field(..., min_length=1, max_length=65536)
    internal: bool = False

    @field_validator("body")
    @classmethod
    def _body_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class ErrorOut(Schema):
    detail: str


def _clean(text: str | None) -> str | None:
    return text.replace("\x00", "") if text else text


@api.get("/tickets", response=TicketPage, tags=["tickets"])
def list_tickets(request: HttpRequest, filters: Query[TicketFilters]):
    _operator(request)
    qs = ticket_list(
        status=filters.status,
        queue=filters.queue,
        priority=filters.priority,
        channel=filters.channel,
        intent=_clean(filters.intent),
        customer_email=_clean(filters.customer),
        q=_clean(filters.q),
        created_after=filters.created_after,
        created_before=filters.created_before,
    )
    items = list(qs[filters.offset : filters.offset + filters.limit])
    return {"count": qs.count(), "limit": filters.limit, "offset": filters.offset, "items": items}


@api.get("/tickets/{reference}", response={200: TicketDetailOut, 404: ErrorOut}, tags=["tickets"])
def get_ticket(request: HttpRequest, reference: str):
    _operator(request)
    ticket = ticket_get_by_reference(reference)
    if ticket is None:
        return Status(404, {"detail": f"no ticket {reference}"})
    return ticket


@api.post("/tickets/{reference}/messages", response={201: MessageOut, 404: ErrorOut}, tags=["tickets"])
def post_message(request: HttpRequest, reference: str, payload: MessageIn):
    """Post an operator reply (visible to the customer) or, with `internal`, an internal note."""
    user = _operator(request)
    ticket = ticket_get_by_reference(reference)
    if ticket is None:
        return Status(404, {"detail": f"no ticket {reference}"})
    message = operator_message_post(ticket=ticket, user=user, body=payload.body, is_internal=payload.internal)
    return Status(201, message)
