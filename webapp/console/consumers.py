"""Websocket consumers: the browser learns *that* something changed and re-fetches the HTML over
ordinary permission-checked HTTP (htmx). Events carry ids and small status data only."""

from __future__ import annotations

from urllib.parse import urlparse

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http.request import validate_host

from support_agents.events import INBOX_GROUP, ticket_group
from support_agents.models import Ticket
from support_agents.permissions import is_admin, is_operator

from .signals import user_group

# Close codes (4000-4999 are application codes) so the browser can say why it is not live.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


def origin_allowed(scope: dict) -> bool:
    """Same-site Origin only. asgi.py's AllowedHostsOriginValidator checks this too; the consumer
    repeats it so a routing change can never expose the event stream cross-site."""
    origin = dict(scope.get("headers", [])).get(b"origin")
    if not origin:
        return False
    host = urlparse(origin.decode("latin1")).hostname
    allowed = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return bool(host) and validate_host(host, allowed)


@database_sync_to_async
def _roles(user) -> tuple[bool, bool]:
    return is_operator(user), is_admin(user)


@database_sync_to_async
def _ticket_exists(ticket_id: int) -> bool:
    return Ticket.objects.filter(pk=ticket_id).exists()


class _ConsoleConsumer(AsyncJsonWebsocketConsumer):
    async def groups_for(self) -> list[str] | None:
        """Groups to join, or None when the target does not exist."""
        raise NotImplementedError

    async def connect(self) -> None:
        self.joined: list[str] = []
        user = self.scope.get("user")
        if not origin_allowed(self.scope):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.is_operator, self.is_admin = await _roles(user)
        if not self.is_operator:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        groups = await self.groups_for()
        if groups is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        for group in [*groups, user_group(user.pk)]:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # The stream is one-way; a ping lets the browser measure the round trip.
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "t": content.get("t")})

    async def moedesk_event(self, event: dict) -> None:
        kind = str(event.get("kind", ""))
        # Configuration events (agent settings, intake secrets, prices) are for admins only.
        if kind.startswith("admin.") and not self.is_admin:
            return
        await self.send_json({"type": "event", "kind": kind, "ticket_id": event.get("ticket_id"),
                              "data": event.get("data") or {}})

    async def console_logout(self, event: dict) -> None:
        await self.close(code=CLOSE_UNAUTHENTICATED)


class InboxConsumer(_ConsoleConsumer):
    async def groups_for(self) -> list[str] | None:
        return [INBOX_GROUP]


class TicketConsumer(_ConsoleConsumer):
    async def groups_for(self) -> list[str] | None:
        ticket_id = int(self.scope["url_route"]["kwargs"]["ticket_id"])
        return [ticket_group(ticket_id)] if await _ticket_exists(ticket_id) else None
