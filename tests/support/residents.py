"""Helpers for the archive, frequency, welcome and weekly-summary tests: a confirmed subscriber
through the real sign-up flow, and updates put straight into a given state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailing.db import get_engine
from mailing.models import Update, utcnow
from mailing.states import UpdateStatus
from tests.conftest import drain_worker
from tests.support.helpers import only_link, subscribe


def confirmed(client: Any, smtp: Any, email: str, themes: list[str], **extra: Any) -> str:
    """Sign up and confirm through the API; returns the subscriber's preferences path."""
    smtp.outbox.clear()
    assert subscribe(client, email, themes, **extra).status_code == 202
    [mail] = smtp.outbox.wait_for(1)
    assert (
        client.post(only_link(mail, "confirm"), headers={"accept": "application/json"}).json()[
            "status"
        ]
        == "active"
    )
    welcome = [m for m in smtp.outbox.wait_for(2) if m.subject.startswith("Welcome")]
    assert welcome, "no welcome email"
    drain_worker()  # the welcome's outbox row is deleted just after the relay took it
    path = only_link(welcome[0], "preferences")
    smtp.outbox.clear()
    return path


def put_update(
    subject: str,
    themes: list[str],
    *,
    status: UpdateStatus = UpdateStatus.SENT,
    sent_at: datetime | None = None,
    published: bool = True,
    body: str = "The **first** paragraph of the update.\n\nMore detail follows.",
) -> int:
    """An update row in `status` (sent now unless `sent_at` says when), as if sent long ago."""
    from tests.support.sending import draft

    update_id = draft(subject, body, themes)
    with Session(get_engine()) as session:
        update = session.get(Update, update_id)
        assert update is not None
        update.status = status
        update.sent_at = (sent_at or utcnow()) if status == UpdateStatus.SENT else None
        update.published = published
        session.add(update)
        session.commit()
    return update_id


def add_weekly_summary(session: Session, subscriber_id: int, week: str = "2026-11-28") -> None:
    """A weekly summary row for this subscriber, as mailing/digests.plan makes them."""
    from mailing.models import WeeklyDigest

    session.add(WeeklyDigest(subscriber_id=subscriber_id, week=week, update_ids="1"))
    session.commit()
