"""Logging out closes the user's open console websockets, so a stale tab stops receiving events."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

log = logging.getLogger("moedesk.console")


def user_group(user_id: int) -> str:
    return f"console-user-{user_id}"


@receiver(user_logged_out)
def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    if user is None:
        return
    try:
        async_to_sync(get_channel_layer().group_send)(user_group(user.pk), {"type": "console.logout"})
    except Exception:
        log.warning("could not notify sockets of logout", exc_info=True)


def _on_step_saved(sender, instance, created, **kwargs) -> None:
    # Routing rollups are updated after the step's transaction commits, in a short transaction of
    # their own, so a run never waits on the rollup row lock.
    if created and instance.kind == "model" and instance.routing:
        from django.db import transaction

        step_id = instance.pk
        transaction.on_commit(lambda: _safe_add(step_id))


def _safe_add(step_id: int) -> None:
    from .rollups import add_step

    try:
        add_step(step_id)
    except Exception:  # a lost rollup update must never break a run; rollups.rebuild() repairs it
        log.warning("routing rollup update failed", extra={"step_id": step_id}, exc_info=True)


def connect_step_signal() -> None:
    from django.db.models.signals import post_save

    from support_agents.models import RunStep

    post_save.connect(_on_step_saved, sender=RunStep, dispatch_uid="console-routing-rollup")
