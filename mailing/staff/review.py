"""Two-person review of an update (issue 25): an editor asks for review, every sender (and
admin) other than them is emailed a link to the send confirmation page, whose fingerprint pins
the version they saw; the author is told when it has gone. With MAILING_REQUIRE_REVIEW, every
send or schedule needs someone other than the author, carrying the fingerprint of what they saw.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from mailing import updates
from mailing.config import get_settings
from mailing.errors import Conflict, Forbidden
from mailing.mail import outbox
from mailing.models import Staff, Update
from mailing.staff.audit import AuditAction, audit
from mailing.states import ROLE_RANK, NoticeKind, StaffRole, UpdateStatus


def reviewers(session: Session, author_id: int | None) -> list[Staff]:
    """Everyone enabled who may send, except the author."""
    found = session.exec(select(Staff).where(col(Staff.disabled_at).is_(None))).all()
    return [
        s for s in found if ROLE_RANK[s.role] >= ROLE_RANK[StaffRole.SENDER] and s.id != author_id
    ]


def ask(session: Session, update: Update, by: Staff) -> list[int]:
    """Record the request and queue an email to each reviewer (in the caller's transaction);
    returns the notice ids to publish after the commit. Conflict unless it is a draft or when
    there is nobody else who could review it."""
    assert update.id is not None and by.id is not None
    if update.status != UpdateStatus.DRAFT:
        raise Conflict("Only a draft can be reviewed.")
    people = reviewers(session, by.id)
    if not people:
        raise Conflict("There is no sender other than you to review it.")
    # The audit row records who asked, when, and for which version (its fingerprint).
    detail = f"{len(people)} reviewers, version {updates.fingerprint(update)}"
    audit(session, by.id, AuditAction.REVIEW_ASKED, update.id, detail)
    return [
        outbox.queue_staff(session, s.id or 0, NoticeKind.REVIEW_REQUEST, update_id=update.id)
        for s in people
    ]


def check_send(session: Session, update: Update, staff_id: int | None, fingerprint: object) -> None:
    """With MAILING_REQUIRE_REVIEW: Forbidden for the author, Conflict without the fingerprint
    of the version the sender saw. Without the setting, nothing."""
    if not get_settings().require_review:
        return
    if staff_id is not None and staff_id == update.created_by:
        raise Forbidden(
            "This service needs review by someone other than the author "
            "(MAILING_REQUIRE_REVIEW): ask for review."
        )
    if not isinstance(fingerprint, str) or not fingerprint:
        raise Conflict("A reviewed send carries the fingerprint of the version you saw (from GET).")


def tell_author(session: Session, update: Update, sender_id: int | None) -> int | None:
    """Queue "it has gone" to the update's author when someone else sent it; the notice id."""
    author = session.get(Staff, update.created_by) if update.created_by else None
    if author is None or author.id == sender_id or author.disabled_at is not None:
        return None
    assert update.id is not None and author.id is not None
    return outbox.queue_staff(session, author.id, NoticeKind.UPDATE_SENT, update_id=update.id)


def tell_author_now(session: Session, update: Update, sender_id: int | None) -> None:
    """tell_author, committed and handed to the workers (a lost hand-over is re-driven)."""
    from workers.enqueue import notice_publisher

    notice_id = tell_author(session, update, sender_id)
    if notice_id is not None:
        session.commit()
        notice_publisher.submit(notice_id)
