from django.core.management.base import BaseCommand

from support_agents.services.demo import demo_seed


class Command(BaseCommand):
    help = "Create demo logins, the `demo` intake source and demo customers (idempotent)"

    def handle(self, *args, **options) -> None:
        result = demo_seed()
        self.stdout.write("Demo logins:")
        for role, username, password in result.logins:
            self.stdout.write(f"  {role:9s} {username} / {password}")
        self.stdout.write(f"Intake source: {result.source}  secret: {result.secret}")
        self.stdout.write(f"Customers: {result.customers}")
