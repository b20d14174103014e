"""Pages that explain rather than act: a preview of the next weekly summary and a short help
page for writing updates. Read only, for every signed-in staff member."""

from __future__ import annotations

from fastapi.responses import Response

from mailing import archive, digests, figures, london, updates
from mailing.models import utcnow
from mailing.themes import ALL_THEMES
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
        send_at=london.describe(coming.send_at),
        items=[(u, archive.entry(u)) for u in coming.updates],
        # Weekly subscribers on at least one of the week's themes (each counted once).
        readers=figures.reach(session, themes).weekly if themes else 0,
        weekly_total=figures.reach(session, list(ALL_THEMES)).weekly,
        nav="weekly",
    )


@router.get("/help")
def help_page(who: Who) -> Response:
    return console_page("help", who, nav="help")
