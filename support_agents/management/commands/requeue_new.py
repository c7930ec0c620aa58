from django.core.management.base import BaseCommand, CommandParser

from support_agents.services.triage import triage_requeue_stalled


class Command(BaseCommand):
    help = (
        "Enqueue triage again for tickets still `new` or `triaging` after --older-than seconds "
        "(e.g. Redis was down). Triage workers do the same for every such ticket when they start."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, default=60)

    def handle(self, *args, older_than: int, **o) -> None:
        ids = triage_requeue_stalled(older_than_s=older_than)
        self.stdout.write(f"re-enqueued {len(ids)} ticket(s)")
