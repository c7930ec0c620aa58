"""API bearer tokens: `mdk_<random>`; only the SHA-256 is stored, the key is shown once."""

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from support_agents.models import ApiToken
from support_agents.services.audit import audit_log

TOKEN_PREFIX = "mdk_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(
    *, user: AbstractBaseUser, name: str = "", actor: str = "system"
) -> tuple[ApiToken, str]:
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=key[:12], key_hash=_hash(key))
        audit_log(
            actor=actor, verb="api_token.created", data={"prefix": token.prefix, "user": user.get_username()}
        )
    return token, key


def api_token_authenticate(key: str) -> AbstractBaseUser | None:
    if not key.startswith(TOKEN_PREFIX) or len(key) > 200:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(key), revoked=False).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    # One write a minute at most: the timestamp is for humans, not for accounting.
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def api_token_revoke(*, token: ApiToken, actor: str = "system") -> None:
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk).update(revoked=True)
        audit_log(actor=actor, verb="api_token.revoked", data={"prefix": token.prefix})
