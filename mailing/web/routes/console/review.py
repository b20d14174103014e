""" "Ask for review" on a draft's page: the senders are emailed a link to its send confirmation
(rules in mailing/staff/review.py)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from mailing.errors import Conflict
from mailing.staff import review
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import (
    Form,
    RowId,
    Who,
    console_page,
    console_router,
    update_or_404,
)
from workers.enqueue import notice_publisher

router = console_router()


@router.post("/drafts/{update_id}/review")
def ask_for_review(
    update_id: RowId, request: Request, who: Who, form: Form, session: SessionDep
) -> Response:
    update = update_or_404(session, who, update_id)
    try:
        notice_ids = review.ask(session, update, who.staff)
    except Conflict as refused:
        session.rollback()
        return console_page("review_refused", who, 409, update=update, message=refused.message)
    session.commit()
    for notice_id in notice_ids:
        notice_publisher.submit(notice_id)
    return RedirectResponse(f"/admin/drafts/{update_id}?review-asked=1", status_code=303)
