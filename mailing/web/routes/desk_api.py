"""The support desk's JSON API (admins): find one subscriber by exact address, act for them
with a required reason. The rules and the audit live in mailing/desk.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from mailing import desk
from mailing.models import Staff
from mailing.states import StaffRole
from mailing.web.deps import SessionDep
from mailing.web.routes.admin_api import requires
from workers.enqueue import notice_publisher

router = APIRouter(prefix="/admin/subscribers", tags=["support desk"])

Admin = Annotated[Staff, Depends(requires(StaffRole.ADMIN))]


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str
    themes: list[str] | None = None  # for /themes only


@router.get("")
def look_up(email: str, who: Admin, session: SessionDep) -> dict[str, Any]:
    """The one subscriber with exactly that address (case-insensitive); 404 otherwise."""
    return desk.view(session, desk.look_up(session, who.id, email))


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
        subscriber_id: int, data: ReasonIn, who: Admin, session: SessionDep
    ) -> dict[str, Any]:
        return act(subscriber_id, action, data, who, session)

    handler.__name__ = f"desk_{action.name.lower()}"
    router.post(f"/{{subscriber_id}}/{action.value}")(handler)


for _action in desk.DeskAction:
    _route(_action)
