"""Test copies of an update: to the sender's own address or another staff member's only, at
most MAILING_TEST_SENDS_PER_HOUR per staff member, each audited with its recipient.

A test copy is the one way a draft leaves the service before it is sent, so it must never become
a way to mail anyone else: the recipient must be staff (an enabled staff account).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from mailing.config import get_settings
from mailing.errors import Invalid, TooMany, Unavailable
from mailing.mail.relay import PermanentFailure, TransientFailure
from mailing.models import Staff, Update, table_of
from mailing.ratelimit import get_limiter
from mailing.subscribers.addresses import InvalidAddress, normalise
from mailing.updates import send_test

WINDOW = 3600


def allowed_recipient(session: Session, who: Staff, to: object) -> str:
    """The address to send a test to, if it is the caller's or another enabled staff member's."""
    try:
        address = normalise(to if isinstance(to, str) else "").email
    except InvalidAddress as exc:
        raise Invalid({"to": "Enter a valid email address."}) from exc
    if address.lower() == who.email.lower():
        return who.email
    staff = table_of(Staff)
    found = session.execute(
        sa.select(staff.c.email).where(
            sa.func.lower(staff.c.email) == address.lower(), staff.c.disabled_at.is_(None)
        )
    ).scalar()
    if found is None:
        raise Invalid({"to": "A test can go only to your own address or another staff member's."})
    return str(found)


def send(session: Session, who: Staff, update: Update, to: object) -> str:
    """Send one test copy; returns the address it went to. Raises Invalid, TooMany, Unavailable."""
    address = allowed_recipient(session, who, to)
    verdict = get_limiter().hit(f"test-send:{who.id}", get_settings().test_sends_per_hour, WINDOW)
    if not verdict.allowed:
        raise TooMany(
            "You have sent the most test copies allowed in an hour; try again later.",
            verdict.retry_after,
        )
    try:
        send_test(session, who.id, update, address)
    except (TransientFailure, PermanentFailure) as exc:
        raise Unavailable("The mail relay did not take the test copy; try again.") from exc
    return address
