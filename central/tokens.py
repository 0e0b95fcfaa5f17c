"""Bootstrap tokens: ``ID.SECRET``, stored as the id and a hash of the secret.

Like kubeadm's tokens, the id is public (lists, audit, revocation) and the
secret is shown once. A token's only right is to enroll one node per use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from central.store import TokenRecord

_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{32})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_token() -> tuple[str, str]:
    """(token_id, secret); the token to hand out is f"{token_id}.{secret}"."""
    token_id = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    return token_id, secret


def hash_secret(secret: str) -> str:
    # The secret has ~165 bits of entropy, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(text: str) -> tuple[str, str] | None:
    """(token_id, secret), or None when text is not shaped like a token."""
    match = _TOKEN_RE.match(text.strip())
    return (match.group(1), match.group(2)) if match else None


def token_refusal(record: TokenRecord | None, secret: str, now: float) -> str | None:
    """Why this token cannot enroll a node now, or None when it can."""
    if record is None or not hmac.compare_digest(record.secret_hash, hash_secret(secret)):
        return "unknown bootstrap token"
    if record.revoked:
        return f"bootstrap token {record.token_id} was revoked"
    if now >= record.expires_at:
        return f"bootstrap token {record.token_id} has expired"
    if record.uses_left <= 0:
        return f"bootstrap token {record.token_id} has been used up ({record.uses_total} of {record.uses_total} uses)"
    return None
