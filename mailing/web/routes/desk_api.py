"""The support desk's JSON API (admins): find one subscriber by exact address, act for them
with a required reason. The rules and the audit live in mailing/subscribers/desk.py."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from mailing.errors import Invalid
from mailing.models import Staff, utcnow
from mailing.states import StaffRole
from mailing.subscribers import desk, refresh
from mailing.web.deps import SessionDep, bearer_token
from mailing.web.routes.admin_api import requires
from mailing.web.routes.console.common import ConsoleRoute, RowId
from mailing.web.routes.console.desk_page import desk_page
from workers.enqueue import notice_publisher

# The console's route class: the same GET path is the console's page for a browser.
router = APIRouter(prefix="/admin/subscribers", tags=["support desk"], route_class=ConsoleRoute)
ADMIN = requires(StaffRole.ADMIN)

Admin = Annotated[Staff, Depends(ADMIN)]


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str
    themes: list[str] | None = None  # for /themes only


@router.get("")
def look_up(request: Request, session: SessionDep, email: str | None = None) -> Response:
    """The one subscriber with exactly that address (case-insensitive); 404 otherwise. Without
    a bearer token, from a browser: the console's support-desk page."""
    if bearer_token(request) is None and "text/html" in request.headers.get("accept", ""):
        return desk_page(request, session)
    who = ADMIN(request, session)
    if email is None:
        raise Invalid({"email": "Give the person's whole email address: ?email=..."})
    return JSONResponse(desk.view(session, desk.look_up(session, who.id, email)))


@router.get("/consent-refresh")
def consent_refresh(who: Admin, session: SessionDep) -> dict[str, int]:
    """How many are due a consent refresh and how many were asked and have not answered yet
    (all 0 while MAILING_CONSENT_REFRESH_YEARS is 0): figures only."""
    return asdict(refresh.figures(session, utcnow()))


def act(
    subscriber_id: int, action: desk.DeskAction, data: ReasonIn, who: Staff, session: SessionDep
) -> dict[str, Any]:
    done = desk.act(session, who.id, subscriber_id, action, data.reason, data.themes)
    session.commit()
    if done.notice_id is not None:
        notice_publisher.submit(done.notice_id)
    if done.erased:
        return {"id": subscriber_id, "status": "erased"}
    subscriber = desk.reload(session, subscriber_id)
    return desk.view(session, subscriber)


def _route(action: desk.DeskAction) -> None:
    def handler(
        subscriber_id: RowId, data: ReasonIn, who: Admin, session: SessionDep
    ) -> dict[str, Any]:
        return act(subscriber_id, action, data, who, session)

    handler.__name__ = f"desk_{action.name.lower()}"
    # Digits only, within the table's integer range (a bigger id is a 422, never a 500).
    router.post(f"/{{subscriber_id:int}}/{action.value}")(handler)


for _action in desk.DeskAction:
    _route(_action)
