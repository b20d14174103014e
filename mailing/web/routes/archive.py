"""The public archive: GET /updates, GET /updates/{id} and GET /updates.atom.

Read-only pages anyone may open; they show only what mailing/updates/archive.py returns (published,
sent updates) and never anything about a subscriber. Bad filters get a 400 page, not a 500.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from mailing.config import get_settings
from mailing.rendering import render
from mailing.themes import THEMES, theme_titles
from mailing.updates import archive
from mailing.web.deps import SessionDep
from mailing.web.pages import page

router = APIRouter(tags=["archive"])

PUBLIC = {"Cache-Control": "public, max-age=300"}
MAX_PAGE = 10_000


class BadFilter(ValueError):
    pass


def _themes(request: Request) -> list[str]:
    chosen = request.query_params.getlist("theme")
    if len(chosen) > len(THEMES) or any(t not in THEMES for t in chosen):
        raise BadFilter("Choose themes from the list.")
    return [t for t in THEMES if t in chosen]


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or len(raw) > 5 or not 1 <= int(raw) <= MAX_PAGE:
        raise BadFilter("That page number does not exist.")
    return int(raw)


def _bad_filter(exc: BadFilter) -> Response:
    return page("message", status_code=400, title="Past updates", message=str(exc))


@router.get("/updates", include_in_schema=False)
def archive_page(request: Request, session: SessionDep) -> Response:
    try:
        themes, number = _themes(request), _page_number(request)
    except BadFilter as exc:
        return _bad_filter(exc)
    found = archive.entries(
        session,
        themes,
        limit=archive.PAGE_SIZE + 1,
        offset=(number - 1) * archive.PAGE_SIZE,
    )
    query = "".join(f"theme={t}&" for t in themes)
    response = page(
        "archive",
        entries=found[: archive.PAGE_SIZE],
        chosen=themes,
        page_number=number,
        previous_url=f"/updates?{query}page={number - 1}" if number > 1 else None,
        next_url=f"/updates?{query}page={number + 1}" if len(found) > archive.PAGE_SIZE else None,
        feed_url="/updates.atom" + (f"?{query.rstrip('&')}" if themes else ""),
        titles=theme_titles,
    )
    response.headers.update(PUBLIC)
    return response


@router.get("/updates.atom", include_in_schema=False)
def feed(request: Request, session: SessionDep) -> Response:
    try:
        themes = _themes(request)
    except BadFilter as exc:
        return _bad_filter(exc)
    found = archive.entries(session, themes, limit=archive.FEED_SIZE)
    updated = found[0].sent_at if found else datetime(2026, 1, 1, tzinfo=UTC)
    items = []
    for item in found:
        update = archive.find(session, item.id)
        assert update is not None
        safe = replace(
            item, subject=archive.xml_safe(item.subject), summary=archive.xml_safe(item.summary)
        )
        items.append((safe, Markup(archive.xml_safe(str(archive.page_html(update))))))  # noqa: S704
    body = render(
        "feeds/updates.atom.xml",
        items=items,
        updated=updated,
        themes=theme_titles(themes),
        # Built from the configured address, never from the request's Host header.
        self_url=f"{get_settings().base_url}/updates.atom"
        + (f"?{request.url.query}" if themes else ""),
        titles=theme_titles,
    )
    return Response(body, media_type="application/atom+xml; charset=utf-8", headers=PUBLIC)


@router.get("/updates/{update_id}", include_in_schema=False)
def update_page(update_id: str, session: SessionDep) -> Response:
    # A path that is not a plain number is just another update that does not exist.
    found = (
        archive.find(session, int(update_id))
        if update_id.isdigit() and len(update_id) <= 10
        else None
    )
    if found is None:
        return page("archive_missing", status_code=404)
    response = page(
        "archive_update",
        entry=archive.entry(found),
        body_html=archive.page_html(found),
        titles=theme_titles,
    )
    response.headers.update(PUBLIC)
    return response
