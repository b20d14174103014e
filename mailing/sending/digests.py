"""The weekly summary: who gets one, for which week, and what it lists.

A week's summaries go out on Saturday at 08:30 London time (Europe/London, so the moment moves
with the clocks) and list the published updates sent since the Saturday before at 08:30 on each
person's themes (one staff kept out of the archive is given whole, having no page to link to);
no one is sent an empty summary. `plan` writes one pending `weekly_digest` row
per person and week, once: the week is claimed in `digest_week` first, and (subscriber, week) is
unique. Sending them is mailing/sending/summaries.py's job. Every time here is a parameter (`now`),
so the calendar is tested with a controlled clock.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from markupsafe import Markup
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from mailing import updates
from mailing.clock import LONDON
from mailing.config import get_settings
from mailing.mail.builder import Prepared, list_headers, list_urls, prepare
from mailing.models import (
    Delivery,
    DigestWeek,
    Subscriber,
    SubscriberTheme,
    Update,
    WeeklyDigest,
)
from mailing.states import DigestStatus, Frequency, SubscriberStatus, UpdateStatus
from mailing.themes import theme_titles
from mailing.updates import archive

log = logging.getLogger(__name__)

SATURDAY = 5  # date.weekday()
SEND_AT = time(8, 30)
# A beat that was down at 08:30 still sends that Saturday's summaries when it comes back within
# this long; later than that, the week is skipped rather than sent days late.
CATCH_UP = timedelta(hours=24)
INSERT_CHUNK = 1000


# --- The calendar ------------------------------------------------------------------------------


def send_moment(saturday: date) -> datetime:
    """08:30 London time on that date, in UTC (Saturday 08:30 is never in a clock change)."""
    return datetime.combine(saturday, SEND_AT, tzinfo=LONDON).astimezone(UTC)


def latest_saturday(now: datetime) -> date:
    """The London date of the last Saturday 08:30 at or before `now`."""
    local = now.astimezone(LONDON).date()
    saturday = local - timedelta(days=(local.weekday() - SATURDAY) % 7)
    if send_moment(saturday) > now:
        saturday -= timedelta(days=7)
    return saturday


def week_window(saturday: date) -> tuple[datetime, datetime]:
    """[the Saturday before at 08:30, this Saturday at 08:30), in UTC: 167 or 169 hours across
    a clock change, 168 otherwise."""
    return send_moment(saturday - timedelta(days=7)), send_moment(saturday)


def due_week(now: datetime) -> date | None:
    """The Saturday whose summaries should be planned at `now`, or None outside the catch-up."""
    saturday = latest_saturday(now)
    return saturday if now < send_moment(saturday) + CATCH_UP else None


# --- Planning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    week: date
    digests: int


def plan(session: Session, now: datetime) -> Planned | None:
    """Write the due week's pending summaries, if this call is the first to claim the week.

    Returns None when no week is due or another call planned it. The caller commits; until then
    the claim row is locked, so a racing planner waits and then finds the week taken.
    """
    week = due_week(now)
    if week is None:
        return None
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    claimed = session.execute(
        insert(DigestWeek)
        .values(week=week.isoformat(), planned_at=now, digests=0)
        .on_conflict_do_nothing(index_elements=["week"])
        .returning(col(DigestWeek.week))
    ).scalar_one_or_none()
    if claimed is None:
        return None
    rows = list(_who_gets_what(session, week))
    for start in range(0, len(rows), INSERT_CHUNK):
        session.execute(
            insert(WeeklyDigest)
            .values(rows[start : start + INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["subscriber_id", "week"])
        )
    session.execute(
        sa.update(DigestWeek)
        .where(col(DigestWeek.week) == week.isoformat())
        .values(digests=len(rows))
    )
    log.info("weekly summaries for %s: %d planned", week.isoformat(), len(rows))
    return Planned(week, len(rows))


def _who_gets_what(session: Session, week: date) -> Iterable[dict[str, Any]]:
    """One row per active weekly subscriber with at least one update for them that week."""
    found = [archive.entry(u) for u in _sent_between(session, *week_window(week))]
    if not found:
        return
    by_theme: dict[str, list[int]] = defaultdict(list)
    for entry in reversed(found):  # oldest first within each theme
        for theme in entry.themes:
            by_theme[theme].append(entry.id)
    weekly = (
        select(SubscriberTheme.subscriber_id, SubscriberTheme.theme)
        .join(Subscriber, col(Subscriber.id) == SubscriberTheme.subscriber_id)
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .where(Subscriber.frequency == Frequency.WEEKLY)
    )
    themes_of: dict[int, set[str]] = defaultdict(set)
    for subscriber_id, theme in session.exec(weekly):
        themes_of[subscriber_id].add(theme)
    # Someone who switched to weekly mid-week has already had some of these one by one.
    already = set(
        session.exec(
            select(Delivery.subscriber_id, Delivery.update_id)
            .join(Subscriber, col(Subscriber.id) == Delivery.subscriber_id)
            .where(col(Delivery.update_id).in_([e.id for e in found]))
            .where(Subscriber.frequency == Frequency.WEEKLY)
        ).all()
    )
    order = {entry.id: i for i, entry in enumerate(found)}  # newest first, as in the archive
    for subscriber_id in sorted(themes_of):
        ids = {u for t in themes_of[subscriber_id] for u in by_theme.get(t, ())}
        ids = {u for u in ids if (subscriber_id, u) not in already}
        if ids:
            yield {
                "subscriber_id": subscriber_id,
                "week": week.isoformat(),
                "update_ids": ",".join(str(u) for u in sorted(ids, key=order.__getitem__)),
                "status": DigestStatus.PENDING,
                "attempts": 0,
            }


def _sent_between(session: Session, since: datetime, until: datetime) -> list[Update]:
    """Updates sent in [since, until), newest first, whether published or not."""
    return list(
        session.exec(
            select(Update)
            .where(Update.status == UpdateStatus.SENT)
            .where(col(Update.sent_at) >= since, col(Update.sent_at) < until)
            .order_by(col(Update.sent_at).desc(), col(Update.id).desc())
        ).all()
    )


@dataclass(frozen=True)
class Upcoming:
    """What the next Saturday summary would hold if it were planned now (the console's preview)."""

    send_at: datetime  # the next Saturday 08:30, London, in UTC
    updates: list[Update]  # sent so far this week, newest first


def upcoming(session: Session, now: datetime) -> Upcoming:
    """The updates sent since the last summary's moment, and when the next one goes."""
    saturday = latest_saturday(now)
    since = send_moment(saturday)
    return Upcoming(send_moment(saturday + timedelta(days=7)), _sent_between(session, since, now))


# --- The email ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One update in a summary: a published one is summed up and linked to its archive page;
    one kept out of the archive is given whole, having no page to link to."""

    entry: archive.Entry
    body_html: Markup | None = None
    body_text: str | None = None


def _item(update: Update) -> Item:
    if update.published:
        return Item(archive.entry(update))
    return Item(
        archive.entry(update), updates.render_html(update.body), updates.render_text(update.body)
    )


def prepare_digest(session: Session, week: str, update_ids: str) -> Prepared | None:
    """The summary listing these updates, with placeholders for the address and link tokens;
    None if none of them can be shown any more (then there is nothing to send)."""
    entries = []
    for raw in update_ids.split(","):
        update = updates.find(session, int(raw)) if raw.isdigit() else None
        if update is not None and update.status == UpdateStatus.SENT:
            entries.append(_item(update))
    if not entries:
        return None
    base = get_settings().base_url
    unsubscribe_url, preferences_url = list_urls()
    day = date.fromisoformat(week)
    count = "1 update" if len(entries) == 1 else f"{len(entries)} updates"
    return prepare(
        "digest",
        subject=f"Your weekly summary: {count} from the Health Inequalities Strategy",
        context={
            "entries": entries,
            "titles": theme_titles,
            "week_label": f"the week to {day.strftime('%A %-d %B %Y').replace('  ', ' ')}",
            "archive_url": f"{base}/updates",
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": preferences_url,
        },
        headers=list_headers(unsubscribe_url),
    )


def export_rows(session: Session, subscriber_id: int) -> list[dict[str, object]]:
    """A subscriber's weekly summaries, for their data export."""
    rows = session.exec(
        select(WeeklyDigest)
        .where(WeeklyDigest.subscriber_id == subscriber_id)
        .order_by(col(WeeklyDigest.id))
    ).all()
    return [
        {
            "week": d.week,
            "status": d.status.value,
            "update_ids": [int(u) for u in d.update_ids.split(",") if u.isdigit()],
            "sent_at": d.sent_at.isoformat() if d.sent_at else None,
        }
        for d in rows
    ]
