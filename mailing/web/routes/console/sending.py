"""Sending an update from the console: the confirmation page, the send itself (now or at a
London time), pause, resume, cancel, and progress. Every action goes through mailing/sending/,
the same functions the API and the CLI call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlmodel import Session

from mailing import clock, sending, updates
from mailing.errors import Conflict, Forbidden, Invalid
from mailing.figures import deliverability as deliverability
from mailing.figures import subscribers
from mailing.figures.progress import failed_deliveries
from mailing.models import Update, utcnow
from mailing.sending.control import overdue
from mailing.staff import review
from mailing.states import StaffRole, UpdateStatus
from mailing.updates import archive
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import (
    Form,
    RecentSecondFactor,
    RowId,
    Who,
    console_page,
    console_router,
    need,
    update_or_404,
)
from workers.enqueue import publish_update_batches

log = logging.getLogger(__name__)
router = console_router()


def _progress_url(update_id: int) -> str:
    return f"/admin/drafts/{update_id}/progress"


def _send_page(
    who: Who, session: Session, update: Update, status_code: int = 200, **context: object
) -> Response:
    return console_page(
        "send",
        who,
        status_code=status_code,
        update=update,
        themes=updates.themes_of(update),
        recipients=sending.count_recipients(session, updates.themes_of(update)),
        reach=subscribers.reach(session, updates.themes_of(update)),
        fingerprint=updates.fingerprint(update),
        errors=context.pop("errors", {}),
        nav="updates",
        **context,
    )


@router.get("/drafts/{update_id}/send")
def confirm_send(update_id: RowId, who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.SENDER)
    update = update_or_404(session, who, update_id)
    if update.status != UpdateStatus.DRAFT:
        return RedirectResponse(_progress_url(update_id), status_code=303)
    return _send_page(who, session, update)


@router.post("/drafts/{update_id}/send")
def send(update_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep) -> Response:
    need(who, StaffRole.SENDER)
    update = update_or_404(session, who, update_id)
    try:
        review.check_send(session, update, who.staff.id, form.get("fingerprint"))
        started = sending.request_send(
            session,
            update_id,
            who.staff.id,
            publish_update_batches,
            fingerprint=str(form.get("fingerprint", "")),
        )
    except sending.ContentChanged:
        session.rollback()
        return console_page("changed", who, status_code=409, update=update, nav="updates")
    except sending.WrongState:
        # Scheduled: it waits for its time (the progress page offers to unschedule it).
        session.rollback()
    except (Forbidden, Conflict) as refused:
        return _send_page(
            who, session, update, refused.status_code, errors={"send": refused.message}
        )
    else:
        if started.started:
            review.tell_author_now(session, update, who.staff.id)
    # Sending twice sends nothing more: a second press just shows the progress.
    return RedirectResponse(_progress_url(update_id), status_code=303)


def _london_time(form: dict[str, object]) -> datetime:
    """The date and time fields of the schedule form, read as London time."""
    day, hour = str(form.get("send_date", "")).strip(), str(form.get("send_time", "")).strip()
    if not day or not hour:
        raise Invalid({"send_date": "Enter the date and the time to send it."})
    try:
        return clock.parse_local(f"{day} {hour}")
    except clock.NoSuchTime as exc:
        raise Invalid({"send_date": str(exc)}) from exc
    except ValueError as exc:
        raise Invalid(
            {"send_date": "Enter a real date and time, like 1 12 2026 and 09:00."}
        ) from exc


@router.post("/drafts/{update_id}/schedule")
def schedule(
    update_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    need(who, StaffRole.SENDER)
    update = update_or_404(session, who, update_id)
    try:
        review.check_send(session, update, who.staff.id, form.get("fingerprint"))
        sending.schedule(
            session,
            update_id,
            who.staff.id,
            _london_time(form),
            utcnow(),
            fingerprint=str(form.get("fingerprint", "")),
        )
    except sending.ContentChanged:
        session.rollback()
        return console_page("changed", who, status_code=409, update=update, nav="updates")
    except Invalid as bad:
        session.rollback()
        values = {"send_date": form.get("send_date", ""), "send_time": form.get("send_time", "")}
        return _send_page(who, session, update, 422, errors=bad.errors, values=values)
    except Forbidden as refused:
        return _send_page(who, session, update, 403, errors={"send": refused.message})
    except Conflict as refused:
        session.rollback()
        if update.status == UpdateStatus.DRAFT:  # refused by review, not a second press
            return _send_page(who, session, update, 409, errors={"send": refused.message})
        return RedirectResponse(_progress_url(update_id), status_code=303)
    session.commit()
    return RedirectResponse(_progress_url(update_id), status_code=303)


class SendAction(StrEnum):
    """The buttons on a send's progress page."""

    UNSCHEDULE = "unschedule"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


ACTIONS: dict[SendAction, Callable[[Session, int, int | None], object]] = {
    SendAction.UNSCHEDULE: sending.unschedule,
    SendAction.PAUSE: sending.pause,
    SendAction.RESUME: lambda s, u, who: sending.resume(s, u, who, publish_update_batches),
    SendAction.CANCEL: sending.cancel,
}


def _act(session: Session, who: Who, update_id: int, action: object) -> Response:
    need(who, StaffRole.SENDER)
    update_or_404(session, who, update_id)
    act = ACTIONS.get(action) if isinstance(action, SendAction) else None
    if act is None:  # no fallback: an action not listed does nothing at all
        return console_page("not_found", who, status_code=404)
    try:
        act(session, update_id, who.staff.id)
        session.commit()
    except Conflict:
        # Someone else changed it first (or it finished): the progress page shows where it is.
        session.rollback()
    return RedirectResponse(_progress_url(update_id), status_code=303)


@router.post("/drafts/{update_id}/unschedule")
def unschedule(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    return _act(session, who, update_id, SendAction.UNSCHEDULE)


@router.post("/drafts/{update_id}/pause")
def pause(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    return _act(session, who, update_id, SendAction.PAUSE)


@router.post("/drafts/{update_id}/resume")
def resume(update_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep) -> Response:
    return _act(session, who, update_id, SendAction.RESUME)


@router.get("/drafts/{update_id}/cancel")
def confirm_cancel(update_id: RowId, who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.SENDER)
    update = update_or_404(session, who, update_id)
    return console_page(
        "cancel", who, update=update, p=sending.progress(session, update_id), nav="updates"
    )


@router.post("/drafts/{update_id}/cancel")
def cancel(update_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep) -> Response:
    return _act(session, who, update_id, SendAction.CANCEL)


@router.get("/drafts/{update_id}/progress")
def progress_page(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    show = who.staff.role == StaffRole.ADMIN
    return console_page(
        "progress",
        who,
        update=update,
        p=sending.progress(session, update_id),
        deliverability=deliverability.for_update(session, update_id),
        scheduled_for=clock.describe(update.send_at) if update.send_at else None,
        overdue=overdue(update, utcnow()),
        can_send=who.staff.role in (StaffRole.SENDER, StaffRole.ADMIN),
        failures=failed_deliveries(session, update_id, show_addresses=show),
        show_addresses=show,
        body_html=archive.page_html(update),
        archive_url=f"/updates/{update_id}" if archive.find(session, update_id) else None,
        nav="updates",
    )


@router.get("/drafts/{update_id}/progress.json")
def progress_json(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update_or_404(session, who, update_id)
    return JSONResponse(
        sending.progress(session, update_id).as_json(), headers={"Cache-Control": "no-store"}
    )
