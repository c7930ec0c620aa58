"""Live events for the console: published to Channels groups after the transaction commits.

Sending happens on one background event loop per process (started lazily, re-created after a fork),
so callers never block on Redis, events keep their order, and the Redis connections stay warm
instead of a new loop + connection per event (which is what `async_to_sync` in a worker would do).
"""

import asyncio
import logging
import os
import threading
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger("moedesk.events")

INBOX_GROUP = "inbox"
MAX_PENDING = 10_000


def ticket_group(ticket_id: int) -> str:
    return f"ticket-{ticket_id}"


class _Sender:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="moedesk-events", daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue(MAX_PENDING)
        ready.set()
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        while True:
            groups, message = await self.queue.get()
            try:
                layer = get_channel_layer()
                if layer is not None:
                    for group in groups:
                        await layer.group_send(group, message)
            except Exception:
                # The database is the source of truth; a lost live event only delays a screen refresh.
                log.warning(
                    "live event not delivered",
                    extra={"kind": message["kind"], "ticket_id": message["ticket_id"]},
                    exc_info=True,
                )
            finally:
                self.queue.task_done()

    def submit(self, groups: tuple[str, ...], message: dict[str, Any]) -> None:
        def put() -> None:
            try:
                self.queue.put_nowait((groups, message))
            except asyncio.QueueFull:
                log.warning("live event dropped: queue full", extra={"kind": message["kind"]})

        self.loop.call_soon_threadsafe(put)

    def flush(self, timeout: float = 5.0) -> None:
        asyncio.run_coroutine_threadsafe(self.queue.join(), self.loop).result(timeout)


_sender: _Sender | None = None
_sender_lock = threading.Lock()


def _get_sender() -> _Sender:
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid() or not _sender.thread.is_alive():
            _sender = _Sender()
        return _sender


def send_now(kind: str, ticket_id: int | None, data: dict[str, Any], *, inbox_only: bool = False) -> None:
    """Queue an event immediately (no transaction); prefer `publish_event`."""
    message = {"type": "moedesk.event", "kind": kind, "ticket_id": ticket_id, "data": data}
    groups = (INBOX_GROUP,) if ticket_id is None or inbox_only else (INBOX_GROUP, ticket_group(ticket_id))
    try:
        _get_sender().submit(groups, message)
    except Exception:
        log.warning("live event not queued", extra={"kind": kind, "ticket_id": ticket_id}, exc_info=True)


def flush_events(timeout: float = 5.0) -> None:
    """Wait until queued events were handed to Redis (tests, shutdown)."""
    if _sender is not None and _sender.pid == os.getpid():
        _sender.flush(timeout)


def publish_event(
    kind: str, *, ticket_id: int | None, data: dict[str, Any], inbox_only: bool = False
) -> None:
    """Send `kind` to the inbox and the ticket's group once the current transaction commits.

    `inbox_only` skips the ticket's group (each group_send is several Redis commands): for a ticket
    created in this transaction, whose page nobody can have open yet.
    """
    transaction.on_commit(lambda: send_now(kind, ticket_id, data, inbox_only=inbox_only))
