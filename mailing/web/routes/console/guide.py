"""Pages that explain rather than act: a preview of the next weekly summary and a short help
page for writing updates. Read only, for every signed-in staff member."""

from __future__ import annotations

from fastapi.responses import Response

from mailing import clock, updates
from mailing.figures import subscribers
from mailing.models import utcnow
from mailing.sending import digests
from mailing.themes import ALL_THEMES
from mailing.updates import archive
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import Who, console_page, console_router

router = console_router()


@router.get("/weekly-summary")
def weekly_summary(who: Who, session: SessionDep) -> Response:
    now = utcnow()
    coming = digests.upcoming(session, now)
    themes = sorted({t for u in coming.updates for t in updates.themes_of(u)})
    return console_page(
        "weekly_summary",
        who,
        send_at=clock.describe(coming.send_at),
        items=[(u, archive.entry(u)) for u in coming.updates],
        # Weekly subscribers on at least one of the week's themes (each counted once).
        readers=subscribers.reach(session, themes).weekly if themes else 0,
        weekly_total=subscribers.reach(session, list(ALL_THEMES)).weekly,
        nav="weekly",
    )


@router.get("/help")
def help_page(who: Who) -> Response:
    return console_page("help", who, nav="help")
