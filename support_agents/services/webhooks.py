"""Standard Webhooks signing (https://www.standardwebhooks.com/): pure functions, no Django."""

import base64
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"


class SignatureError(Exception):
    """Why a delivery was not authenticated (logged, never shown in detail to the caller)."""


def generate_secret(nbytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def secret_key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise ValueError("webhook secret must be whsec_<base64>") from exc


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The `webhook-signature` value for one secret: `v1,<base64 HMAC-SHA256("id.ts.body")>`."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secrets_: list[str],
    msg_id: str | None,
    timestamp: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless one of the header's v1 signatures matches one of the secrets."""
    if not msg_id or not timestamp or not signature_header:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("malformed webhook-timestamp")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance_s:
        raise SignatureError("webhook-timestamp outside tolerance")
    given = []
    for part in signature_header.split():
        version, _, value = part.partition(",")
        if version == "v1" and value:
            try:
                given.append(base64.b64decode(value, validate=True))
            except ValueError:
                continue
    if not given:
        raise SignatureError("no v1 signature")
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    matched = False
    for secret in secrets_:
        try:
            key = secret_key(secret)
        except ValueError:
            continue
        expected = hmac.new(key, to_sign, hashlib.sha256).digest()
        for candidate in given:
            # compare_digest on every pair: no early exit that would leak which one matched
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no signature matches")
