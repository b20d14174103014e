"""The public archive: sent updates that staff published, for /updates, each update's page and
the Atom feed (and the links in weekly summaries).

Invariant: only updates whose status is `sent` and that are published are ever listed (a draft,
scheduled, paused or cancelled one never is). A published update that has begun going out keeps
its own page (`find`), so the "View in your browser" link of those it reached works even if the
send is paused or cancelled part-way. Nothing here reads a subscriber table, so no personal data
can reach these pages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from markupsafe import Markup
from sqlmodel import Session, col, select

from mailing import updates
from mailing.clock import LONDON
from mailing.config import get_settings
from mailing.models import Update
from mailing.states import UpdateStatus

PAGE_SIZE = 20
FEED_SIZE = 20
SUMMARY_CHARS = 240


@dataclass(frozen=True)
class Entry:
    id: int
    subject: str
    themes: list[str]
    sent_at: datetime
    summary: str

    @property
    def url(self) -> str:
        return url_for(self.id)

    @property
    def sent_on(self) -> str:
        """The London date it was sent, as people read it: 5 December 2026."""
        return f"{self.sent_at.astimezone(LONDON):%-d %B %Y}"


def url_for(update_id: int) -> str:
    return f"{get_settings().base_url}/updates/{update_id}"


def visible() -> sa.ColumnElement[bool]:
    """The one condition that puts an update in public view."""
    return sa.and_(col(Update.status) == UpdateStatus.SENT, col(Update.published).is_(True))


def on_any_theme(themes: Sequence[str]) -> sa.ColumnElement[bool]:
    """Updates about at least one of these (known) theme slugs; `themes` is comma-separated."""
    padded = sa.literal(",") + col(Update.themes) + sa.literal(",")
    return sa.or_(*(padded.like(f"%,{slug},%") for slug in themes))


def entries(
    session: Session,
    themes: Sequence[str] = (),
    *,
    limit: int = PAGE_SIZE,
    offset: int = 0,
) -> list[Entry]:
    """Published sent updates, newest first; only those on `themes` (checked slugs) if given."""
    query = select(Update).where(visible())
    if themes:
        query = query.where(on_any_theme(themes))
    rows = session.exec(
        query.order_by(col(Update.sent_at).desc(), col(Update.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [entry(u) for u in rows]


def entry(update: Update) -> Entry:
    # A send stopped part-way has no sent_at: it went out from when it started.
    sent_at = update.sent_at or update.send_started_at
    assert update.id is not None and sent_at is not None
    return Entry(
        id=update.id,
        subject=update.subject,
        themes=updates.themes_of(update),
        sent_at=sent_at,
        summary=summary(update.body),
    )


# Statuses of a send that has begun: some people may hold its email and its link.
_WENT_OUT = frozenset(
    {UpdateStatus.SENDING, UpdateStatus.PAUSED, UpdateStatus.SENT, UpdateStatus.CANCELLED}
)


def find(session: Session, update_id: int) -> Update | None:
    """The published update if it has gone out to anyone (even if cancelled part-way), else
    None (the page answers 404 either way). Only `entries` decides what is listed."""
    update = updates.find(session, update_id)
    if update is None or not update.published or update.status not in _WENT_OUT:
        return None
    if update.status != UpdateStatus.SENT and update.send_started_at is None:
        return None
    return update


_UNDERLINE = re.compile(r"^[=-]+$")


def summary(body: str, limit: int = SUMMARY_CHARS) -> str:
    """The opening paragraph of an update as plain text (headings skipped), cut at a word."""
    text = heading = ""
    for block in updates.render_text(body).split("\n\n"):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        if len(lines) == 2 and _UNDERLINE.match(lines[1]):
            heading = heading or lines[0]  # its words are usually in the subject already
        elif lines:
            text = " ".join(lines)
            break
    text = text or heading
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.-")
    return cut + "…"


# Our own inline style attributes (markdown-it escapes every quote the writer typed, so no other
# ` style="` can appear). Pages allow no inline style: the site's style sheet does that job.
_STYLE_ATTRIBUTE = re.compile(r' style="[^"]*"')


def page_html(update: Update) -> Markup:
    """The update's body as the email shows it, without the email's inline styles."""
    return Markup(_STYLE_ATTRIBUTE.sub("", str(updates.render_html(update.body))))  # noqa: S704


# Characters XML 1.0 cannot carry at all (even escaped); a writer may paste one by accident.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """`text` without the characters an Atom feed must not hold."""
    return _NOT_XML.sub("", text)


def set_published(update: Update, published: object) -> None:
    """Staff's choice; raises ValueError for anything but a boolean."""
    if not isinstance(published, bool):
        raise ValueError("'published' must be true or false.")
    update.published = published
