"""Version AgentProfile saves that bypass `agent_profile_update` (Django admin, shell, data fixes)."""
from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver

from support_agents.models import AgentProfile, AgentProfileVersion, AuditEvent


@receiver(post_save, sender=AgentProfile, dispatch_uid="moedesk-agent-profile-version")
def profile_saved(sender, instance: AgentProfile, created: bool, **kwargs) -> None:  # noqa: ANN001, ANN003
    if getattr(instance, "_versioned_by_service", False) or kwargs.get("raw"):
        return
    from support_agents.services.agents import profile_snapshot

    latest = instance.versions.order_by("-version").first()
    snap = profile_snapshot(instance)
    if latest is None:
        if created:
            return  # a new profile gets v1 when its first run or first change needs it
        AgentProfileVersion.objects.create(profile=instance, version=1, snapshot=snap, changed_by="system:save")
        return
    if latest.snapshot == snap:
        return
    diff = {k: {"from": latest.snapshot.get(k), "to": v} for k, v in snap.items() if latest.snapshot.get(k) != v}
    AgentProfileVersion.objects.create(profile=instance, version=latest.version + 1, snapshot=snap,
                                       changed_by="system:save", changes=diff)
    AuditEvent.objects.create(actor="system:save", verb="agent.updated",
                              data={"agent": instance.slug, "version": latest.version + 1, "changes": diff})
