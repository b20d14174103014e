"""The update pages: the dashboard, composing and editing drafts, their preview and test copy."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from mailing import clock, sending, updates
from mailing.errors import MailingError, TooMany
from mailing.figures import deliverability as deliverability
from mailing.figures import kept_counts, subscribers
from mailing.figures.progress import recent_updates
from mailing.models import Update, utcnow
from mailing.sending.control import overdue_updates
from mailing.staff.sessions import SignedIn
from mailing.states import StaffRole, UpdateStatus, role_allows
from mailing.updates import archive, test_copies
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import (
    Form,
    RowId,
    Who,
    console_page,
    console_router,
    update_or_404,
)

router = console_router()
SENT_OR_SENDING = frozenset({UpdateStatus.SENT, UpdateStatus.SENDING, UpdateStatus.PAUSED})
UNFINISHED = frozenset({UpdateStatus.SENDING, UpdateStatus.PAUSED, UpdateStatus.CANCELLED})


@router.get("")
def dashboard(request: Request, who: Who, session: SessionDep) -> Response:
    recent = recent_updates(session)
    # The latest sends whose bounce or complaint rate is over the mailbox providers' limits.
    # One grouped query for the rates of the latest sends, not two queries per send.
    by_id = {u.id: u for u in recent}
    warnings = [
        (by_id[r["update_id"]], found)
        for r in reversed(deliverability.over_time(session, limit=20))
        if r["update_id"] in by_id
        for found in [deliverability.warnings_for(r["bounce_rate"], r["complaint_rate"])]
        if found
    ]
    return console_page(
        "dashboard",
        who,
        updates=recent,
        deliverability_warnings=warnings,
        overdue=[
            (u, clock.describe(u.send_at))
            for u in overdue_updates(session, utcnow())
            if u.send_at is not None
        ],
        active_total=subscribers.active_total(session),
        drafts=sum(1 for u in recent if u.status == UpdateStatus.DRAFT),
        sent_count=sum(1 for u in recent if u.status in SENT_OR_SENDING),
        # A scheduled update has no deliveries yet: who it would go to now.
        planned={
            u.id: sending.count_recipients(session, updates.themes_of(u))
            for u in recent
            if u.status == UpdateStatus.SCHEDULED
        },
        # A send not finished: its figures so far (the update's own are written at the finish).
        settled=kept_counts.taken_and_failed(
            session,
            [u.id for u in recent if u.id is not None and u.status in UNFINISHED],
        ),
        created={u.id: clock.short(u.created_at) for u in recent},
        notice="The draft is deleted." if "deleted" in request.query_params else "",
        nav="updates",
    )


@router.get("/compose")
def compose_form(who: Who, session: SessionDep) -> Response:
    return _compose_page(who, session, 200, {}, {"themes": [], "published": True})


@router.post("/compose")
def compose(who: Who, form: Form, session: SessionDep) -> Response:
    try:
        update = updates.create_draft(
            session, who.staff.id, form.get("subject"), form.get("body"), form["themes"]
        )
    except updates.InvalidUpdate as bad:
        return _compose_page(who, session, 422, _in_page_order(bad.errors), _values(form))
    archive.set_published(update, _values(form)["published"])
    session.commit()
    return RedirectResponse(f"/admin/drafts/{update.id}?saved=1", status_code=303)


def _compose_page(
    who: SignedIn,
    session: Session,
    status_code: int,
    errors: dict[str, str],
    values: dict[str, object],
) -> Response:
    return console_page(
        "compose",
        who,
        status_code=status_code,
        errors=errors,
        values=values,
        active=subscribers.reach_by_theme(session),
        nav="compose",
    )


NOTICES = {
    "saved": "Your draft is saved.",
    "tested": "A test copy is on its way to {email}.",
    "review-asked": "The senders are asked to review it; you will be told when it has gone.",
    "copied": "This is a new draft, copied from the update you chose. Nothing is sent yet.",
}


@router.get("/drafts/{update_id}")
def draft_page(update_id: RowId, request: Request, who: Who, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    if update.status != UpdateStatus.DRAFT:
        return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
    notice = next((m for k, m in NOTICES.items() if k in request.query_params), "")
    return _draft_page(
        who,
        session,
        update,
        200,
        {},
        {
            "subject": update.subject,
            "body": update.body,
            "themes": updates.themes_of(update),
            "published": update.published,
        },
        notice.format(email=who.staff.email),
    )


@router.post("/drafts/{update_id}")
def edit_draft(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    if update.status != UpdateStatus.DRAFT:
        return _not_a_draft(who, update)
    try:
        updates.edit_draft(
            session,
            who.staff.id,
            update,
            subject=form.get("subject", ""),
            body=form.get("body", ""),
            themes=form["themes"],
        )
    except updates.InvalidUpdate as bad:
        session.rollback()
        errors = _in_page_order(bad.errors)
        return _draft_page(who, session, update, 422, errors, _values(form), "")
    except updates.NotADraft:
        return _not_a_draft(who, update)
    archive.set_published(update, _values(form)["published"])
    session.commit()
    return RedirectResponse(f"/admin/drafts/{update_id}?saved=1", status_code=303)


def _draft_page(
    who: SignedIn,
    session: Session,
    update: Update,
    status_code: int,
    errors: dict[str, str],
    values: dict[str, object],
    notice: str,
) -> Response:
    return console_page(
        "draft",
        who,
        status_code=status_code,
        update=update,
        errors=errors,
        values=values,
        notice=notice,
        active=subscribers.reach_by_theme(session),
        can_send=role_allows(who.staff.role, StaffRole.SENDER),
        nav="updates",
    )


# The email preview is the only page that may be framed, and only by the console itself. Inline
# style is how emails are styled; nothing else (no script, no remote image) may load.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'none'"
)


@router.get("/drafts/{update_id}/preview")
def preview(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    return HTMLResponse(
        updates.preview(update).html,
        headers={
            "Content-Security-Policy": PREVIEW_CSP,
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        },
    )


@router.get("/drafts/{update_id}/test")
def test_form(update_id: RowId) -> Response:
    return RedirectResponse(f"/admin/drafts/{update_id}", status_code=303)


@router.post("/drafts/{update_id}/test")
def send_test(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    try:
        # The same rule as the API's: the hourly limit, a staff recipient, 503 if the relay
        # will not take it.
        test_copies.send(session, who.staff, update, who.staff.email)
    except MailingError as refused:
        session.rollback()
        if update.status != UpdateStatus.DRAFT:
            return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
        answer = _draft_page(
            who,
            session,
            update,
            refused.status_code,
            {"test": refused.message},
            {"subject": update.subject, "body": update.body, "themes": updates.themes_of(update)},
            "",
        )
        if isinstance(refused, TooMany):
            answer.headers["Retry-After"] = str(refused.retry_after)
        return answer
    session.commit()
    if update.status != UpdateStatus.DRAFT:
        return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
    return RedirectResponse(f"/admin/drafts/{update_id}?tested=1", status_code=303)


@router.post("/drafts/{update_id}/duplicate")
def duplicate(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    """A new draft from any update (sent, scheduled, cancelled or a draft)."""
    source = update_or_404(session, who, update_id)
    try:
        copy = updates.duplicate(session, who.staff.id, source)
    except updates.InvalidUpdate as bad:
        session.rollback()
        values = {
            "subject": source.subject,
            "body": source.body,
            "themes": updates.themes_of(source),
            "published": source.published,
        }
        return _compose_page(who, session, 422, _in_page_order(bad.errors), values)
    session.commit()
    return RedirectResponse(f"/admin/drafts/{copy.id}?copied=1", status_code=303)


@router.get("/drafts/{update_id}/delete")
def confirm_delete(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    if update.status != UpdateStatus.DRAFT:
        return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
    return console_page(
        "delete", who, update=update, changed=clock.short(update.updated_at), nav="updates"
    )


@router.post("/drafts/{update_id}/delete")
def delete(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    try:
        updates.delete_draft(session, who.staff.id, update)
    except updates.NotADraft:
        session.rollback()
        return _not_a_draft(who, update)
    session.commit()
    return RedirectResponse("/admin?deleted=1", status_code=303)


def _not_a_draft(who: SignedIn, update: Update) -> Response:
    return console_page("not_a_draft", who, status_code=409, update=update)


def _in_page_order(errors: dict[str, str]) -> dict[str, str]:
    # The error summary lists problems in the order the fields appear on the page.
    order = {name: i for i, name in enumerate(("subject", "themes", "body"))}
    return dict(sorted(errors.items(), key=lambda item: order.get(item[0], len(order))))


def _values(form: dict[str, Any]) -> dict[str, object]:
    return {
        "subject": form.get("subject", ""),
        "body": form.get("body", ""),
        "themes": form.get("themes") or [],
        # An unticked box is simply absent from the form: absent means not published.
        "published": form.get("published") == "yes",
    }
