import json
import time
import uuid

import httpx
from django.core.management.base import BaseCommand, CommandError, CommandParser

from support_agents.models import IntakeSource
from support_agents.services.webhooks import sign


class Command(BaseCommand):
    help = 'Sign and POST a ticket to the intake webhook, e.g. send_ticket --source demo --email a@b.c "text"'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("text", help="ticket body")
        parser.add_argument("--source", required=True)
        parser.add_argument("--email", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument("--subject", default="")
        parser.add_argument("--channel", default="web", choices=["email", "chat", "web"])
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
        parser.add_argument(
            "--secret", help="signing secret (default: the source's newest, read from the DB)"
        )
        parser.add_argument("--id", dest="msg_id", help="webhook-id (default: random; reuse to test dedupe)")

    def handle(self, *args, **o) -> None:
        secret = o["secret"]
        if not secret:
            source = IntakeSource.objects.filter(name=o["source"]).first()
            if source is None or not source.secrets:
                raise CommandError(f"no intake source {o['source']!r} with a secret; pass --secret")
            secret = source.secrets[0]
        payload = {"customer": {"email": o["email"]}, "body": o["text"], "channel": o["channel"]}
        if o["name"]:
            payload["customer"]["name"] = o["name"]
        if o["subject"]:
            payload["subject"] = o["subject"]
        body = json.dumps(payload).encode()
        msg_id = o["msg_id"] or f"msg_{uuid.uuid4().hex}"
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, msg_id, ts, body),
        }
        url = f"{o['url'].rstrip('/')}/api/intake/{o['source']}/"
        try:
            resp = httpx.post(url, content=body, headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            raise CommandError(f"could not reach {url}: {exc}") from exc
        self.stdout.write(f"{resp.status_code} {resp.text}")
        if resp.status_code >= 300:
            raise CommandError(f"intake answered {resp.status_code}")
