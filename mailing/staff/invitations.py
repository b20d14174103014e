"""One-time enrolment links: an invitation to a new staff member, or a new start after their
second factors were reset. The link lets its holder choose a password and enrol a second factor
in one sitting; it works for 72 hours and once.

No password travels by email or chat, and a password alone never enrols a factor for someone
who was sent a link: the first factor may be enrolled only in the half-open session the link
opened (see may_enrol_first_factor).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailing.config import get_settings
from mailing.errors import InvalidLink
from mailing.mail import outbox
from mailing.models import Staff, StaffInvitation, utcnow
from mailing.staff.passwords import hash_token
from mailing.staff.sessions import aware, end_all_sessions, start_session
from mailing.states import NoticeKind
from mailing.subscribers.tokens import STAFF_ENROL_MAX_AGE_SECONDS, Purpose, sign, verify

LINK_LIFETIME = timedelta(seconds=STAFF_ENROL_MAX_AGE_SECONDS)
INVITE = "invite"
RESET = "reset"


class LinkSpent(ValueError):
    """The link was good once but is used, replaced, expired or its holder is disabled."""


def issue(session: Session, staff: Staff, reason: str, by: int | None) -> int:
    """A new link for this staff member, emailed through the notice outbox (in the caller's
    transaction; publish the returned notice id after the commit). Earlier links stop working."""
    assert staff.id is not None
    now = utcnow()
    session.execute(
        sa.update(StaffInvitation)
        .where(col(StaffInvitation.staff_id) == staff.id)
        .where(col(StaffInvitation.used_at).is_(None))
        .values(expires_at=now)
    )
    session.add(
        StaffInvitation(
            staff_id=staff.id,
            reason=reason,
            created_by=by,
            created_at=now,
            expires_at=now + LINK_LIFETIME,
        )
    )
    session.flush()
    return outbox.queue_staff(session, staff.id, NoticeKind.STAFF_INVITE)


def reset_and_issue(session: Session, staff: Staff, by: int | None) -> int:
    """Lost phone or key: clear their factors, end their sessions, and issue a new link (an
    invitation again if they never chose a password). Returns the notice id."""
    from mailing.staff import factors

    factors.reset(session, staff)
    return issue(session, staff, RESET if staff.password_hash else INVITE, by)


def open_link(session: Session, staff: Staff) -> StaffInvitation | None:
    """This staff member's newest link that still works, if any."""
    found = session.exec(
        select(StaffInvitation)
        .where(col(StaffInvitation.staff_id) == staff.id)
        .order_by(col(StaffInvitation.id).desc())
    ).first()
    if found is None or found.used_at is not None:
        return None
    expires = aware(found.expires_at)
    return found if expires is not None and expires > utcnow() else None


def link_url(invitation: StaffInvitation) -> str:
    token = sign(Purpose.STAFF_ENROL, {"s": invitation.staff_id, "i": invitation.id})
    return f"{get_settings().base_url}/admin/welcome/{token}"


def check(session: Session, token: str) -> tuple[StaffInvitation, Staff]:
    """The link's row and staff member if it still works. InvalidLink for a forged or
    over-age link, LinkSpent for one used, replaced or for a disabled member."""
    payload = verify(Purpose.STAFF_ENROL, token)
    invitation = session.get(StaffInvitation, payload.get("i"))
    if invitation is None or invitation.staff_id != payload["s"]:
        raise InvalidLink()
    staff = session.get(Staff, invitation.staff_id)
    expires = aware(invitation.expires_at)
    if (
        staff is None
        or staff.disabled_at is not None
        or invitation.used_at is not None
        or expires is None
        or expires <= utcnow()
    ):
        raise LinkSpent("This link has been used already or has stopped working.")
    return invitation, staff


def use(session: Session, invitation: StaffInvitation, staff: Staff) -> str:
    """Spend the link (once, even when two requests race): end any other sessions and open the
    half-open session in which the first factor is enrolled; returns its cookie token."""
    now = utcnow()
    spent = session.execute(
        sa.update(StaffInvitation)
        .where(col(StaffInvitation.id) == invitation.id)
        .where(col(StaffInvitation.used_at).is_(None))
        .values(used_at=now)
    )
    if getattr(spent, "rowcount", 0) != 1:
        session.rollback()
        raise LinkSpent("This link has been used already.")
    end_all_sessions(session, staff)
    token = start_session(session, staff)
    invitation.session_key = hash_token(token)
    invitation.used_at = now
    session.add(invitation)
    session.commit()
    return token


def may_enrol_first_factor(session: Session, staff: Staff, session_key: str) -> bool:
    """Whether a half-open session may enrol a first factor: for someone ever sent a link,
    only the session their newest link opened; for someone created with a password on the
    server (the first admin), their password's session, as before."""
    newest = session.exec(
        select(StaffInvitation)
        .where(col(StaffInvitation.staff_id) == staff.id)
        .order_by(col(StaffInvitation.id).desc())
    ).first()
    return newest is None or newest.session_key == session_key
