from datetime import timedelta

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from support_agents.models import Ticket, TicketStatus
from support_agents.services.tickets import ticket_enqueue_triage


class Command(BaseCommand):
    help = "Enqueue triage again for tickets still `new` after --older-than seconds (e.g. Redis was down)"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, default=60)

    def handle(self, *args, older_than: int, **o) -> None:
        cutoff = timezone.now() - timedelta(seconds=older_than)
        ids = list(
            Ticket.objects.filter(status=TicketStatus.NEW, created_at__lt=cutoff).values_list("pk", flat=True)
        )
        for pk in ids:
            ticket_enqueue_triage(pk)
        self.stdout.write(f"re-enqueued {len(ids)} ticket(s)")
