"""Console sign-in: email and password, then a second factor; the lockout after repeated failures.

One answer whether the address is unknown or the password wrong, taking the same time, so the
form does not reveal which addresses belong to staff. Wrong second-factor codes count towards
the same lockout as wrong passwords.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col

from mailing.addresses import keyed_hash
from mailing.config import get_settings
from mailing.errors import MailingError
from mailing.models import Staff, utcnow
from mailing.ratelimit import get_limiter
from mailing.staff import passkeys
from mailing.staff.factors import CodeAccepted, check_code
from mailing.staff.members import find_staff
from mailing.staff.passwords import hash_password, needs_rehash, password_matches
from mailing.staff.sessions import aware, start_session

MAX_FAILED_SIGN_INS = 5
LOCKOUT = timedelta(minutes=15)

WRONG_DETAILS = "The email address or password is not right."
WRONG_CODE = "That code is not right. Check it and try again."
WRONG_PASSKEY = "That passkey did not work. Try again, or use a code instead."
LOCKED = (
    "Too many failed attempts to sign in. Wait 15 minutes and try again, or ask an admin for help."
)


class SignInFailed(MailingError):
    """The message is safe to show: it never says whether the address belongs to staff.
    401, or 429 while the account (or unknown address) is locked out: `locked` says which, so
    no caller compares the message."""

    status_code = 401

    def __init__(self, message: str, *, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked
        if locked:
            self.status_code = 429


def _locked_out() -> SignInFailed:
    return SignInFailed(LOCKED, locked=True)


def sign_in(session: Session, email: str, password: str) -> tuple[Staff, str]:
    """Check the address and password; start a session and return (staff, session token).

    Five failures in a row lock the account for 15 minutes. Unknown addresses are limited the
    same way (by a hash of the address), so lockout does not reveal who is staff either.
    """
    staff = find_staff(session, email)
    if staff is None or staff.disabled_at is not None:
        password_matches(None, password)
        key = keyed_hash(email.strip().lower(), get_settings().secret_key_list[0])
        verdict = get_limiter().hit(
            f"staff-sign-in:{key}", MAX_FAILED_SIGN_INS, int(LOCKOUT.total_seconds())
        )
        raise SignInFailed(WRONG_DETAILS) if verdict.allowed else _locked_out()
    if is_locked(staff):
        password_matches(None, password)  # the same time as any other answer
        raise _locked_out()
    if not password_matches(staff.password_hash, password):
        count_failure(session, staff)
        # The attempt that locks still says "not right", exactly as for an unknown address.
        raise SignInFailed(WRONG_DETAILS)
    staff.failed_logins = 0
    staff.locked_until = None
    if needs_rehash(staff.password_hash):
        staff.password_hash = hash_password(password)
    session.add(staff)
    token = start_session(session, staff)
    return staff, token


def is_locked(staff: Staff) -> bool:
    locked_until = aware(staff.locked_until)
    return locked_until is not None and locked_until > utcnow()


def count_failure(session: Session, staff: Staff) -> None:
    """One more failure (a wrong password or code); the fifth in a row locks for 15 minutes."""
    # Counted in the database, so parallel attempts cannot undercount.
    session.execute(
        sa.update(Staff)
        .where(col(Staff.id) == staff.id)
        .values(failed_logins=col(Staff.failed_logins) + 1)
    )
    session.refresh(staff)
    if staff.failed_logins >= MAX_FAILED_SIGN_INS:
        staff.failed_logins = 0
        staff.locked_until = utcnow() + LOCKOUT
        session.add(staff)
    session.commit()


def second_factor(
    session: Session, staff: Staff, *, code: object, credential: object, challenge: str | None
) -> CodeAccepted:
    """Check a second factor: a passkey's answer (`credential`, for the session's `challenge`),
    else a typed code from an authenticator app or a recovery code.

    A wrong answer counts towards the lockout; while locked, nothing is even checked.
    """
    if is_locked(staff):
        raise _locked_out()
    if isinstance(credential, str) and credential:
        ok = passkeys.authenticate(session, staff, credential.encode(), challenge)
        accepted = CodeAccepted("passkey") if ok else None
        wrong = WRONG_PASSKEY
    else:
        accepted = check_code(session, staff, code)
        wrong = WRONG_CODE
    if accepted is None:
        count_failure(session, staff)
        raise _locked_out() if is_locked(staff) else SignInFailed(wrong)
    staff.failed_logins = 0
    session.add(staff)
    session.commit()
    return accepted
