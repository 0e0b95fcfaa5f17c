"""AdminService on bootstrap tokens: create, list, revoke."""

from __future__ import annotations

from central import audit
from central.errors import InvalidArgument, NotFound
from central.labels import LabelError, validate_labels
from central.services.base import Caller, Central, record_audit, require_admin, require_viewer
from central.store import TokenRecord
from central.tokens import hash_secret, new_token

MAX_TOKEN_TTL_S = 30 * 86400
MAX_TOKEN_USES = 100_000


def create_token(
    central: Central, caller: Caller, labels: dict[str, str], ttl_s: float, uses: int
) -> tuple[str, TokenRecord]:
    require_admin(central, caller, "token.create")
    try:
        labels = validate_labels(labels)
    except LabelError as exc:
        raise InvalidArgument(str(exc)) from None
    ttl_s = ttl_s or central.settings.token_default_ttl_s
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise InvalidArgument(f"ttl must be between 1 s and {MAX_TOKEN_TTL_S // 86400} days")
    uses = uses or 1
    if not 0 < uses <= MAX_TOKEN_USES:
        raise InvalidArgument(f"uses must be between 1 and {MAX_TOKEN_USES}")
    token_id, secret = new_token()
    now = central.clock()
    record = TokenRecord(token_id, hash_secret(secret), labels, now, now + ttl_s, uses, uses, False, caller.actor)
    central.store.add_token(record)
    record_audit(
        central,
        caller,
        "token.create",
        token_id,
        audit.ALLOWED,
        f"{uses} use(s), expires in {ttl_s:.0f} s, labels {labels}",
    )
    return f"{token_id}.{secret}", record


def list_tokens(central: Central, caller: Caller) -> list[TokenRecord]:
    require_viewer(central, caller, "token.list")
    return central.store.list_tokens()


def revoke_token(central: Central, caller: Caller, token_id: str) -> TokenRecord:
    require_admin(central, caller, "token.revoke", token_id)
    record = central.store.revoke_token(token_id)
    if record is None:
        raise NotFound(f"no bootstrap token {token_id!r}")
    record_audit(central, caller, "token.revoke", token_id, audit.ALLOWED, "revoked")
    return record
