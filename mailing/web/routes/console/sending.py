"""Sending an update from the console: the confirmation page, the send itself, and its progress."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse, RedirectResponse, Response

from mailing import sending, updates
from mailing.console_views import failed_deliveries, progress
from mailing.states import StaffRole, UpdateStatus
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
from workers.enqueue import enqueue_update_send

log = logging.getLogger(__name__)
router = console_router()


@router.get("/drafts/{update_id}/send")
def confirm_send(update_id: RowId, who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.SENDER)
    update = update_or_404(session, who, update_id)
    if update.status != UpdateStatus.DRAFT:
        return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
    return console_page(
        "send",
        who,
        update=update,
        themes=updates.themes_of(update),
        recipients=sending.count_recipients(session, updates.themes_of(update)),
        nav="updates",
    )


@router.post("/drafts/{update_id}/send")
def send(update_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep) -> Response:
    need(who, StaffRole.SENDER)
    update = update_or_404(session, who, update_id)
    if update.status == UpdateStatus.DRAFT:
        started = sending.start_send(session, update_id, who.staff.id)
        session.commit()
        if started.started:
            try:
                enqueue_update_send(update_id)
            except Exception:
                # The send is committed; the beat's reconcile task re-drives it within a minute.
                log.warning(
                    "update %s: could not reach the broker; reconcile will start it", update_id
                )
    # Sending twice sends nothing more: a second press just shows the progress.
    return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)


@router.get("/drafts/{update_id}/progress")
def progress_page(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    show = who.staff.role == StaffRole.ADMIN
    return console_page(
        "progress",
        who,
        update=update,
        p=progress(session, update),
        failures=failed_deliveries(session, update_id, show_addresses=show),
        show_addresses=show,
        nav="updates",
    )


@router.get("/drafts/{update_id}/progress.json")
def progress_json(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update = update_or_404(session, who, update_id)
    return JSONResponse(progress(session, update).as_json(), headers={"Cache-Control": "no-store"})
