"""Helpers shared by test packages (import as `from tests.helpers import ...`)."""

import json
import time
import uuid
from typing import Any

from support_agents.services.webhooks import sign

DEMO_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # test-only; base64 of 24 bytes


def sign_webhook(secret: str, msg_id: str, ts: int | str, body: bytes) -> str:
    """The `webhook-signature` header value for one secret."""
    return sign(secret, msg_id, ts, body)


def webhook_headers(
    secret: str, body: bytes, *, msg_id: str | None = None, ts: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_webhook(secret, msg_id, ts, body),
    }


def ticket_body(
    email: str = "jane.doe@example.com", text: str = "My card payment was charged twice.", **extra: Any
) -> bytes:
    payload = {"customer": {"email": email, "name": "Jane Doe"}, "subject": "Double charge", "body": text}
    payload.update(extra)
    return json.dumps(payload).encode()


def post_signed(client, source: str, body: bytes, secret: str = DEMO_SECRET, **header_kw: Any):
    """POST a signed delivery with django.test.Client."""
    headers = webhook_headers(secret, body, **header_kw)
    return client.post(f"/api/intake/{source}/", data=body, content_type="application/json", headers=headers)


def purge_celery_queues() -> None:
    """Drop queued messages (e.g. triage jobs of rolled-back tests) before starting a real worker."""
    from webapp.celery import QUEUES, app

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in QUEUES:
            channel.queue_purge(name)
