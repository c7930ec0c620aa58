from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError
from django.utils.text import slugify

from support_agents.models import IntakeSource
from support_agents.services.intake import (
    intake_source_create,
    intake_source_rotate,
    intake_source_set_enabled,
)


class Command(BaseCommand):
    help = "Manage intake webhook sources: create NAME | list | rotate NAME [--drop-old] | disable NAME | enable NAME"

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("create", help="create a source and print its signing secret").add_argument("name")
        sub.add_parser("list", help="list sources")
        rotate = sub.add_parser("rotate", help="add a new secret and print it (old ones stay valid)")
        rotate.add_argument("name")
        rotate.add_argument("--drop-old", action="store_true", help="make the new secret the only valid one")
        sub.add_parser("disable", help="refuse deliveries (404)").add_argument("name")
        sub.add_parser("enable", help="accept deliveries again").add_argument("name")

    def _get(self, name: str) -> IntakeSource:
        source = IntakeSource.objects.filter(name=name).first()
        if source is None:
            raise CommandError(f"no intake source named {name!r}")
        return source

    def handle(self, *args, action: str, **opts) -> None:
        actor = "cli"
        if action == "create":
            name = opts["name"]
            if slugify(name) != name:
                raise CommandError("name must be a slug: lower-case letters, digits, '-' or '_'")
            try:
                _, secret = intake_source_create(name=name, actor=actor)
            except IntegrityError as exc:
                raise CommandError(f"intake source {name!r} already exists") from exc
            self.stdout.write(f"created intake source {name}")
            self.stdout.write(f"POST /api/intake/{name}/  signing secret (shown once):")
            self.stdout.write(secret)
        elif action == "list":
            for s in IntakeSource.objects.all():
                state = "enabled" if s.enabled else "disabled"
                self.stdout.write(
                    f"{s.name}\t{state}\tsecrets={len(s.secrets)}\trejected={s.rejected_count}\tcreated={s.created_at:%Y-%m-%d}"
                )
        elif action == "rotate":
            secret = intake_source_rotate(
                source=self._get(opts["name"]), keep_old=not opts["drop_old"], actor=actor
            )
            note = "the only valid secret now" if opts["drop_old"] else "older secrets remain valid"
            self.stdout.write(f"new secret for {opts['name']} ({note}):")
            self.stdout.write(secret)
        elif action in ("disable", "enable"):
            intake_source_set_enabled(source=self._get(opts["name"]), enabled=action == "enable", actor=actor)
            self.stdout.write(f"{opts['name']} {action}d")
