"""Building and sending the one-off emails of the notice outbox, one builder per kind.

A new kind is a NoticeKind, a template pair and one entry in BUILDERS. A notice is sent through
the one mail pipeline (mailing/mail/pipeline.py) on the worker's persistent relay connection, by
whichever task claims it first, and deleted in the same transaction once the relay took it: a
duplicate task finds it gone (or locked) and does nothing. If the subscriber is gone or no longer
needs it (a confirmation for someone already active), it is dropped unsent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.engine import Connection
from sqlmodel import Session

from mailing.config import get_settings
from mailing.deliverability.returnpath import for_notice
from mailing.mail import outbox, pipeline
from mailing.mail.builder import TO, Prepared, list_headers, prepare
from mailing.mail.relay import TransientFailure
from mailing.models import Notice, Staff, Subscriber, Update
from mailing.states import NoticeKind, SubscriberStatus, UpdateStatus
from mailing.subscribers import links, records
from mailing.subscribers.frequency import DESCRIPTIONS
from mailing.subscribers.signup import confirmation_token, confirmations_of
from mailing.subscribers.tokens import EXPORT_MAX_AGE_SECONDS, LINK_PATHS, Purpose
from mailing.themes import ALL_THEMES, theme_titles

log = logging.getLogger(__name__)

Builder = Callable[[Session, Subscriber, Notice], Prepared | None]


def _confirm(session: Session, subscriber: Subscriber, notice: Notice) -> Prepared | None:
    if subscriber.status == SubscriberStatus.ACTIVE:
        return None  # confirmed meanwhile: nothing to ask
    settings = get_settings()
    assert subscriber.id is not None
    themes = [t for t in notice.themes.split(",") if t]
    confirmed = confirmations_of(session, subscriber.id)
    token = confirmation_token(subscriber, themes, confirmed, notice.frequency)
    return prepare(
        "confirm",
        subject="Confirm your subscription to Health Inequalities Strategy updates",
        context={
            "confirm_url": f"{settings.base_url}{LINK_PATHS[Purpose.CONFIRM]}{token}",
            "themes": theme_titles(themes or list(ALL_THEMES)),
            "days": settings.confirm_max_age_days,
        },
    )


def _already_subscribed(
    session: Session, subscriber: Subscriber, notice: Notice
) -> Prepared | None:
    return prepare(
        "already_subscribed",
        subject="You are already subscribed to Health Inequalities Strategy updates",
        context=links.management_urls(subscriber),
    )


def _erase_link(session: Session, subscriber: Subscriber, notice: Notice) -> Prepared | None:
    return prepare(
        "erase_link",
        subject="Your link to erase your Health Inequalities Strategy updates data",
        context={
            "erase_url": links.url_for(Purpose.ERASE, subscriber),
            "days": get_settings().erase_max_age_days,
        },
    )


def _export_link(session: Session, subscriber: Subscriber, notice: Notice) -> Prepared | None:
    return prepare(
        "export_link",
        subject="Your link to download your Health Inequalities Strategy updates data",
        context={
            "export_url": links.url_for(Purpose.EXPORT, subscriber),
            "hours": EXPORT_MAX_AGE_SECONDS // 3600,
        },
    )


def _welcome(session: Session, subscriber: Subscriber, notice: Notice) -> Prepared | None:
    if subscriber.status != SubscriberStatus.ACTIVE:
        return None  # they left (or were erased) before it went: no welcome after goodbye
    urls = links.management_urls(subscriber)
    return prepare(
        "welcome",
        subject="Welcome to Health Inequalities Strategy updates",
        context={
            **urls,
            "themes": theme_titles(records.themes_of(session, subscriber.id or 0)),
            "frequency": DESCRIPTIONS[subscriber.frequency],
            "archive_url": f"{get_settings().base_url}/updates",
        },
        headers=list_headers(urls["unsubscribe_url"]),
    )


def _repermission(session: Session, subscriber: Subscriber, notice: Notice) -> Prepared | None:
    """An imported address without evidence of consent, asked once (subscribers/imports.py): bulk
    mail, so it waits for MAILING_SEND_RATE, which updates and summaries share."""
    if subscriber.status != SubscriberStatus.PENDING:
        return None  # confirmed meanwhile, or left: nothing to ask
    from mailing.ratelimit import send_rate

    send_rate().acquire(1)
    assert subscriber.id is not None
    themes = [t for t in notice.themes.split(",") if t]
    confirmed = confirmations_of(session, subscriber.id)
    token = confirmation_token(subscriber, themes, confirmed, notice.frequency)
    settings = get_settings()
    return prepare(
        "repermission",
        subject="Do you still want Health Inequalities Strategy updates?",
        context={
            "confirm_url": f"{settings.base_url}{LINK_PATHS[Purpose.CONFIRM]}{token}",
            "themes": theme_titles(themes or list(ALL_THEMES)),
            "days": settings.confirm_max_age_days,
        },
    )


def _consent_refresh(session: Session, subscriber: Subscriber, notice: Notice) -> Prepared | None:
    """Consent older than MAILING_CONSENT_REFRESH_YEARS (subscribers/refresh.py): the current
    wording and a button to stay; bulk mail like the re-permission email."""
    if subscriber.status != SubscriberStatus.ACTIVE:
        return None
    from mailing.ratelimit import send_rate
    from mailing.subscribers.consent import CONSENT_TEXT
    from mailing.subscribers.refresh import ANSWER_DAYS

    send_rate().acquire(1)
    urls = links.management_urls(subscriber)
    return prepare(
        "consent_refresh",
        subject="Do you want to keep getting Health Inequalities Strategy updates?",
        context={
            **urls,
            "stay_url": links.url_for(Purpose.STAY, subscriber),
            "wording": CONSENT_TEXT,
            "years": get_settings().consent_refresh_years,
            "days": ANSWER_DAYS,
        },
        headers=list_headers(urls["unsubscribe_url"]),
    )


BUILDERS: dict[NoticeKind, Builder] = {
    NoticeKind.CONFIRM: _confirm,
    NoticeKind.ALREADY_SUBSCRIBED: _already_subscribed,
    NoticeKind.ERASE_LINK: _erase_link,
    NoticeKind.EXPORT_LINK: _export_link,
    NoticeKind.WELCOME: _welcome,
    NoticeKind.REPERMISSION: _repermission,
    NoticeKind.CONSENT_REFRESH: _consent_refresh,
}


def _sign_in_failures(session: Session, admin: Staff, notice: Notice) -> Prepared | None:
    """To an admin: an account sees repeated failed sign-ins (its address is named only here,
    in the email, never in a log or a notice row)."""
    account = session.get(Staff, notice.about_staff_id)
    if account is None or admin.disabled_at is not None:
        return None
    return prepare(
        "sign_in_failures",
        subject="Repeated failed sign-ins to a Health Inequalities Strategy updates account",
        context={
            "account": account.email,
            "yours": admin.id == account.id,
            "staff_url": f"{get_settings().base_url}/admin/staff",
        },
    )


def _staff_invite(session: Session, staff: Staff, notice: Notice) -> Prepared | None:
    from mailing.staff import invitations

    link = invitations.open_link(session, staff)
    if link is None or staff.disabled_at is not None:
        return None  # used, replaced or disabled meanwhile: nothing to send
    return prepare(
        "staff_invite",
        subject="Set up your Health Inequalities Strategy updates console account",
        context={
            "link_url": invitations.link_url(link),
            "hours": invitations.LINK_LIFETIME // timedelta(hours=1),
            "reset": link.reason == invitations.RESET,
            "role": staff.role.value,
        },
    )


def _review_request(session: Session, staff: Staff, notice: Notice) -> Prepared | None:
    update = session.get(Update, notice.update_id) if notice.update_id else None
    if update is None or update.status != UpdateStatus.DRAFT or staff.disabled_at is not None:
        return None  # sent, cancelled or gone meanwhile
    return prepare(
        "review_request",
        subject=f"Please review before it is sent: {update.subject}",
        context={
            "review_url": f"{get_settings().base_url}/admin/drafts/{update.id}/send",
            "update_subject": update.subject,
        },
    )


def _update_sent(session: Session, staff: Staff, notice: Notice) -> Prepared | None:
    update = session.get(Update, notice.update_id) if notice.update_id else None
    if update is None or staff.disabled_at is not None:
        return None
    return prepare(
        "update_sent",
        subject=f"It has gone: {update.subject}",
        context={
            "progress_url": f"{get_settings().base_url}/admin/drafts/{update.id}/progress",
            "update_subject": update.subject,
        },
    )


def _send_paused(session: Session, staff: Staff, notice: Notice) -> Prepared | None:
    """To senders and admins: a send stopped itself (the send guard); the reason is the
    update's error, which names figures only."""
    update = session.get(Update, notice.update_id) if notice.update_id else None
    if update is None or staff.disabled_at is not None:
        return None
    return prepare(
        "send_paused",
        subject=f"Sending paused: {update.subject}"[:200],
        context={
            "update_subject": update.subject,
            "reason": update.error or "",
            "console_url": f"{get_settings().base_url}/admin/drafts/{update.id}/progress",
        },
    )


StaffBuilder = Callable[[Session, Staff, Notice], Prepared | None]
STAFF_BUILDERS: dict[NoticeKind, StaffBuilder] = {
    NoticeKind.STAFF_INVITE: _staff_invite,
    NoticeKind.REVIEW_REQUEST: _review_request,
    NoticeKind.UPDATE_SENT: _update_sent,
    NoticeKind.SIGN_IN_FAILURES: _sign_in_failures,
    NoticeKind.SEND_PAUSED: _send_paused,
}


def build(session: Session, notice: Notice) -> tuple[Prepared, str] | None:
    """The email a notice stands for and its recipient, or None if there is nothing to send."""
    if notice.staff_id is not None:
        staff = session.get(Staff, notice.staff_id)
        staff_builder = STAFF_BUILDERS.get(notice.kind)
        if staff is None or staff_builder is None:
            return None
        built = staff_builder(session, staff, notice)
        return None if built is None else (built, staff.email)
    subscriber = session.get(Subscriber, notice.subscriber_id)
    builder = BUILDERS.get(notice.kind)
    if subscriber is None or builder is None:
        return None
    prepared = builder(session, subscriber, notice)
    return None if prepared is None else (prepared, subscriber.email)


class _Notice:
    """One notice of the outbox as a source of the mail pipeline: claimed under a row lock,
    deleted once the relay took it (or once it is no longer owed)."""

    rated = False  # a confirmation is waited for by a person: never behind a bulk send

    def __init__(self, notice_id: int) -> None:
        self.notice_id = notice_id
        self.session: Session | None = None
        self.claimed = False

    def still_going(self, conn: Connection) -> bool:
        return not self.claimed  # one claim: a notice is sent once or left for its retry

    def claim(self, conn: Connection, limit: int) -> list[Notice]:
        self.claimed = True
        self.session = Session(bind=conn, expire_on_commit=False)
        notice = outbox.claim(self.session, self.notice_id)
        return [] if notice is None else [notice]

    def copy(self, row: Notice) -> pipeline.Copy | None:
        assert self.session is not None
        built = build(self.session, row)
        if built is None:
            return None
        prepared, to = built
        sender = for_notice(prepared.envelope_from, row.subscriber_id)
        return pipeline.Copy(sender, to, prepared.personalise({TO: to}))

    def settle(self, conn: Connection, settled: pipeline.Settled[Notice]) -> None:
        assert self.session is not None
        for notice, how in [(n, "sent") for n in settled.sent] + [
            (n, "dropped") for n in settled.cancelled
        ]:
            outbox.done(self.session, notice)
            log.info(
                "notice %s (%s) for %s %s: %s",
                notice.id,
                notice.kind.value,
                "staff" if notice.staff_id is not None else "subscriber",
                notice.staff_id if notice.staff_id is not None else notice.subscriber_id,
                how,
            )
        self.session.close()
        failures = [f for _, f in settled.failed + settled.deferred + settled.unreachable]
        if failures:
            raise failures[0]  # the row stays (rolled back) for the task's retry

    def committed(self, settled: pipeline.Settled[Notice]) -> None:
        """Nothing to do once the chunk is committed."""


def send(notice_id: int) -> bool:
    """Send one notice if it is still owed; True if an email went. Raises the relay's failures
    (the task retries; the row stays until it is sent)."""
    source = _Notice(notice_id)
    done = pipeline.run(source, chunk=1, lanes=1)
    if done.more:
        raise TransientFailure("every relay connection is busy")
    return done.sent > 0
