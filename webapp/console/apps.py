from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "webapp.console"
    label = "console"
    verbose_name = "Operator console"

    def ready(self) -> None:
        from . import signals  # closes live sockets on logout; keeps routing rollups current

        signals.connect_step_signal()
