"""Staff API tokens: issued one at a time, shown once, stored as a SHA-256, expiring
MAILING_API_TOKEN_DAYS after issue, revocable by an admin.

Issuing a new token ends the old one; a revoked or replaced token matches nothing at all. Each
token carries a scope, `read` < `draft` < `send`, on top of its holder's role: a token for a
reporting script can be `read`, one for a drafting tool `draft`, and only `send` sends.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailing.config import get_settings
from mailing.models import Staff, utcnow
from mailing.staff.passwords import hash_token
from mailing.staff.sessions import aware

TOKEN_BYTES = 32
# Recording each use would write on every API call; once a minute is precise enough to read.
LAST_USE_PRECISION = timedelta(minutes=1)


SCOPES = ("read", "draft", "send")


def scope_allows(scope: str, needed: str) -> bool:
    """Whether a token of `scope` may do what needs `needed` (an unknown scope allows nothing)."""
    return scope in SCOPES and SCOPES.index(scope) >= SCOPES.index(needed)


class TokenExpired(Exception):
    """The token was right but its time is up; the message says when it expired."""


def new_token() -> tuple[str, str]:
    """(token, its hash): the token is for the person, the hash for the database."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token)


def issue_token(session: Session, staff: Staff, scope: str = "send") -> str:
    """A new API token of this scope for this staff member; the old one stops working at once."""
    if scope not in SCOPES:
        raise ValueError(f"a token's scope is one of {', '.join(SCOPES)}")
    token, digest = new_token()
    staff.token_scope = scope
    staff.token_hash = digest
    staff.token_created_at = utcnow()
    staff.token_last_used_at = None
    staff.token_revoked_at = None
    session.add(staff)
    return token


def revoke_token(session: Session, staff: Staff) -> None:
    # A fresh random hash that no token was ever issued for: the old API token is dead.
    staff.token_hash = hash_token(secrets.token_urlsafe(TOKEN_BYTES))
    staff.token_revoked_at = utcnow()
    session.add(staff)


def token_expires_at(staff: Staff) -> datetime:
    issued = aware(staff.token_created_at) or aware(staff.created_at) or utcnow()
    return issued + timedelta(days=get_settings().api_token_days)


def staff_for_token(session: Session, token: str) -> Staff | None:
    """The enabled staff member whose live API token this is, or None; TokenExpired if expired."""
    if not token or len(token) > 200:
        return None
    wanted = hash_token(token)
    staff = session.exec(select(Staff).where(col(Staff.token_hash) == wanted)).first()
    # The index finds the row; the constant-time compare keeps the final check free of timing.
    if staff is None or not hmac.compare_digest(staff.token_hash, wanted):
        return None
    if staff.disabled_at is not None or staff.token_revoked_at is not None:
        return None
    now = utcnow()
    expires = token_expires_at(staff)
    if expires <= now:
        raise TokenExpired(
            f"This API token expired on {expires:%d %B %Y}. Ask an admin for a new one "
            "(mailing staff token EMAIL)."
        )
    last = aware(staff.token_last_used_at)
    if last is None or now - last >= LAST_USE_PRECISION:
        session.execute(
            sa.update(Staff).where(col(Staff.id) == staff.id).values(token_last_used_at=now)
        )
        session.commit()
        session.refresh(staff)
    return staff
