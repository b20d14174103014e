"""The support desk in the console (admins): find one subscriber by exact address, see their
record, and act for them with a required reason (mailing/subscribers/desk.py does it and audits it).

The page is GET /admin/subscribers (the API answers the same path for a bearer token); its forms
post to the same path, so an address is never in a URL.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlmodel import Session

from mailing.errors import MailingError
from mailing.models import utcnow
from mailing.staff.sessions import SignedIn
from mailing.states import StaffRole
from mailing.subscribers import desk, refresh
from mailing.themes import THEMES
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import (
    Form,
    Who,
    console_page,
    console_router,
    current_staff,
    need,
)
from workers.enqueue import notice_publisher

router = console_router()


def _page(who: SignedIn, session: Session, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("errors", {})
    return console_page(
        "subscribers",
        who,
        status_code=status_code,
        nav="subscribers",
        actions=[a.value for a in desk.DeskAction if a != desk.DeskAction.THEMES],
        all_themes=THEMES,
        refresh=refresh.figures(session, utcnow()),
        **context,
    )


def desk_page(request: Request, session: Session) -> Response:
    """GET /admin/subscribers from a browser (called by the API route for requests without a
    bearer token): the look-up form."""
    who = current_staff(request, session)
    need(who, StaffRole.ADMIN)
    return _page(who, session)


@router.post("/subscribers")
def desk_post(who: Who, form: Form, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    try:
        if form.get("action", "find") == "find":
            found = desk.look_up(session, who.staff.id, form.get("email", ""))
            return _page(who, session, found=desk.view(session, found))
        action = desk.DeskAction(str(form.get("action")))
        subscriber_id = int(form.get("subscriber_id", "0"))
        done = desk.act(
            session, who.staff.id, subscriber_id, action, form.get("reason"), form["themes"]
        )
        session.commit()
    except ValueError:
        return _page(who, session, 422, errors={"action": "Choose one of the actions on the page."})
    except MailingError as exc:
        session.rollback()
        errors = getattr(exc, "errors", None) or {"email": exc.message}
        return _page(who, session, exc.status_code, errors=errors)
    if done.notice_id is not None:
        notice_publisher.submit(done.notice_id)
    if done.erased:
        return _page(who, session, done_message=f"Subscriber {subscriber_id} was erased.")
    record = desk.view(session, desk.reload(session, subscriber_id))
    return _page(who, session, found=record, done_message=f"Done: {action.value}.")
