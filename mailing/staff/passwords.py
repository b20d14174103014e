"""Staff secrets at rest: argon2 for passwords, SHA-256 for random tokens.

Neither a password nor a token is ever stored: a copy of the database lets nobody act as staff.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()
# Verified against when the address is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class WeakPassword(ValueError):
    pass


def hash_token(token: str) -> str:
    """The digest kept for a random token (API token, session): random, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"A password can have at most {MAX_PASSWORD_LENGTH} characters.")
    return _hasher.hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    """Whether the password matches; with no stored hash it still takes an argon2 check's time."""
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password[:MAX_PASSWORD_LENGTH]) and (
            stored is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str | None) -> bool:
    return stored is not None and _hasher.check_needs_rehash(stored)
