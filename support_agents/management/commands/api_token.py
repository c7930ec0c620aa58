from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from support_agents.models import ApiToken
from support_agents.permissions import is_operator
from support_agents.services.tokens import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = "REST API tokens: create USERNAME [--name N] | list | revoke PREFIX"

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("username")
        create.add_argument("--name", default="")
        sub.add_parser("list")
        sub.add_parser("revoke").add_argument("prefix")

    def handle(self, *args, action: str, **o) -> None:
        if action == "create":
            user = get_user_model().objects.filter(username=o["username"]).first()
            if user is None:
                raise CommandError(f"no user {o['username']!r}")
            if not is_operator(user):
                raise CommandError(f"{o['username']} is not an operator or admin; the API would refuse it")
            _, key = api_token_create(user=user, name=o["name"], actor="cli")
            self.stdout.write("token (shown once; send as `Authorization: Bearer <token>`):")
            self.stdout.write(key)
        elif action == "list":
            for t in ApiToken.objects.select_related("user"):
                state = "revoked" if t.revoked else "active"
                self.stdout.write(
                    f"{t.prefix}\t{t.user.get_username()}\t{state}\t{t.name}\tlast used {t.last_used_at}"
                )
        else:
            token = ApiToken.objects.filter(prefix=o["prefix"]).first()
            if token is None:
                raise CommandError(f"no token with prefix {o['prefix']!r}")
            api_token_revoke(token=token, actor="cli")
            self.stdout.write(f"revoked {token.prefix}")
