"""The staff JSON API: draft, preview, test-send and send updates; subscriber figures.

Every route needs `Authorization: Bearer {token}` (from `mailing staff create`); a missing or
wrong token gets 401, a role that may not do it 403. The rules live in mailing/updates.py and
mailing/sending.py; these are thin shells.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlmodel import Session

from mailing import sending, updates
from mailing.addresses import InvalidAddress, normalise
from mailing.deliverability import figures as deliverability
from mailing.mailer import PermanentFailure, TransientFailure
from mailing.models import Staff, Update
from mailing.staff import may, staff_for_token
from mailing.states import StaffRole
from mailing.themes import ALL_THEMES
from mailing.web.deps import SessionDep

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", tags=["staff"])

UNAUTHORISED = {"WWW-Authenticate": 'Bearer realm="mailing-staff"'}


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def requires(role: StaffRole) -> Callable[..., Staff]:
    """A dependency: the staff member behind the bearer token, if their role allows `role`."""

    def dependency(request: Request, session: SessionDep) -> Staff:
        token = _bearer(request)
        staff = staff_for_token(session, token) if token else None
        if staff is None:
            raise HTTPException(401, "A valid staff API token is needed.", headers=UNAUTHORISED)
        if not may(staff, role):
            raise HTTPException(403, f"This needs the {role.value} role or higher.")
        return staff

    return dependency


Editor = Annotated[Staff, Depends(requires(StaffRole.EDITOR))]
Sender = Annotated[Staff, Depends(requires(StaffRole.SENDER))]


class UpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Any = None
    body: Any = None
    themes: Any = None


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str


def _invalid(exc: updates.InvalidUpdate) -> HTTPException:
    detail = [
        {"loc": ["body", field], "msg": msg, "type": "value_error"}
        for field, msg in exc.errors.items()
    ]
    return HTTPException(422, detail)


def _get(session: Session, update_id: int) -> Update:
    update = updates.find(session, update_id)
    if update is None:
        raise HTTPException(404, "No update with this id.")
    return update


def _view(session: Session, update: Update) -> dict[str, Any]:
    assert update.id is not None
    body = updates.as_json(update)
    live = sending.progress(session, update.id)
    body.update(
        status=live.status,
        recipients=live.recipients,
        sent=live.sent,
        failed=live.failed,
        cancelled=live.cancelled,
        pending=live.pending,
    )
    body.update(deliverability.for_update(session, update.id))
    return body


@router.post("/updates", status_code=201)
def create_update(data: UpdateIn, who: Editor, session: SessionDep) -> dict[str, Any]:
    try:
        update = updates.create_draft(session, who.id, data.subject, data.body, data.themes)
    except updates.InvalidUpdate as exc:
        raise _invalid(exc) from exc
    session.commit()
    return _view(session, update)


@router.get("/updates/{update_id}")
def get_update(update_id: int, who: Editor, session: SessionDep) -> dict[str, Any]:
    return _view(session, _get(session, update_id))


@router.patch("/updates/{update_id}")
@router.put("/updates/{update_id}", include_in_schema=False)
def edit_update(update_id: int, data: UpdateIn, who: Editor, session: SessionDep) -> dict[str, Any]:
    update = _get(session, update_id)
    try:
        updates.edit_draft(
            session, who.id, update, subject=data.subject, body=data.body, themes=data.themes
        )
    except updates.NotADraft as exc:
        raise HTTPException(409, "Only a draft can be changed; this one is being sent.") from exc
    except updates.InvalidUpdate as exc:
        raise _invalid(exc) from exc
    session.commit()
    return _view(session, update)


@router.get("/updates/{update_id}/preview")
def preview_update(update_id: int, who: Editor, session: SessionDep) -> dict[str, Any]:
    shown = updates.preview(_get(session, update_id))
    return {"subject": shown.subject, "html": shown.html, "text": shown.text}


@router.post("/updates/{update_id}/test", status_code=202)
def test_update(update_id: int, data: TestIn, who: Editor, session: SessionDep) -> dict[str, Any]:
    update = _get(session, update_id)
    try:
        to = normalise(data.to).email
    except InvalidAddress as exc:
        raise HTTPException(
            422,
            [{"loc": ["body", "to"], "msg": "Enter a valid email address.", "type": "value_error"}],
        ) from exc
    try:
        updates.send_test(session, who.id, update, to)
    except (TransientFailure, PermanentFailure) as exc:
        log.warning("test send of update %s failed: %s", update_id, exc)
        raise HTTPException(503, "The mail relay did not take the test copy; try again.") from exc
    session.commit()
    return {"status": "sent", "test": True}


@router.post("/updates/{update_id}/send", status_code=202)
def send_update(update_id: int, who: Sender, session: SessionDep) -> JSONResponse:
    _get(session, update_id)
    started = sending.start_send(session, update_id, who.id)
    session.commit()
    if started.started:
        from workers.enqueue import enqueue_update_send

        enqueue_update_send(update_id)
    body = _view(session, _get(session, update_id))
    body["started"] = started.started
    return JSONResponse(body, status_code=202)


@router.get("/stats")
def stats(who: Editor, session: SessionDep) -> dict[str, Any]:
    """Counts only: subscribers by status, active subscribers by theme, updates by status."""
    by_status = dict(
        session.execute(sa.text("SELECT status, COUNT(*) FROM subscriber GROUP BY status")).all()
    )
    by_theme = dict(
        session.execute(
            sa.text(
                "SELECT t.theme, COUNT(*) FROM subscriber_theme t "
                "JOIN subscriber s ON s.id = t.subscriber_id WHERE s.status = 'active' "
                "GROUP BY t.theme"
            )
        ).all()
    )
    update_status = dict(
        session.execute(sa.text("SELECT status, COUNT(*) FROM theme_update GROUP BY status")).all()
    )
    return {
        "subscribers": {s: int(by_status.get(s, 0)) for s in ("pending", "active", "unsubscribed")},
        "active_by_theme": {t: int(by_theme.get(t, 0)) for t in ALL_THEMES},
        "updates": {s: int(update_status.get(s, 0)) for s in ("draft", "sending", "sent")},
    }
