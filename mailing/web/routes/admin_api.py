"""The staff JSON API: draft, preview, test-send, send, schedule, pause, resume and cancel
updates; subscriber figures; inviting staff and changing their role (admins).

Every route needs `Authorization: Bearer {token}` (from `mailing staff create`); a missing or
wrong token gets 401, a role that may not do it 403. The rules live in mailing/updates/ and
mailing/sending/; these are thin shells, and mailing/web/errors.py turns their errors into
answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlmodel import Session, col, select

from mailing import sending, updates
from mailing.config import get_settings
from mailing.errors import Invalid
from mailing.figures import deliverability as deliverability
from mailing.figures import subscribers
from mailing.models import AuditLog, Staff, Update, utcnow
from mailing.staff import members, review
from mailing.staff.apitokens import TokenExpired, scope_allows, staff_for_token
from mailing.staff.audit import AuditAction
from mailing.staff.members import may
from mailing.states import StaffRole
from mailing.updates import archive, test_copies
from mailing.web.deps import SessionDep, bearer_token, client_ip
from workers.enqueue import notice_publisher, publish_update_batches

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", tags=["staff"])

BY_TOKEN = ", by API token"  # noqa: S105 (an audit note, not a secret)
UNAUTHORISED = {"WWW-Authenticate": 'Bearer realm="mailing-staff"'}


def needed_scope(role: StaffRole, method: str) -> str:
    """The token scope a route needs: reading for GET, sending for what a sender or an admin
    does, drafting for the rest."""
    if method in ("GET", "HEAD"):
        return "read"
    return "draft" if role == StaffRole.EDITOR else "send"


def requires(role: StaffRole) -> Callable[..., Staff]:
    """A dependency: the staff member behind the bearer token, if their role and the token's
    scope allow `role`; a send by token only while MAILING_API_SEND_BY_TOKEN is on."""

    def dependency(request: Request, session: SessionDep) -> Staff:
        token = bearer_token(request)
        try:
            staff = staff_for_token(session, token) if token else None
        except TokenExpired as expired:
            raise HTTPException(401, str(expired), headers=UNAUTHORISED) from None
        if staff is None:
            raise HTTPException(401, "A valid staff API token is needed.", headers=UNAUTHORISED)
        if not may(staff, role):
            raise HTTPException(403, f"This needs the {role.value} role or higher.")
        scope = needed_scope(role, request.method)
        if not scope_allows(staff.token_scope, scope):
            raise HTTPException(
                403, f"This API token's scope is {staff.token_scope}; this needs {scope}."
            )
        if role == StaffRole.SENDER and scope == "send" and not get_settings().api_send_by_token:
            raise HTTPException(
                403,
                "Sending by API token is turned off here (MAILING_API_SEND_BY_TOKEN): "
                "send from the console, with your second factor.",
            )
        return staff

    return dependency


Editor = Annotated[Staff, Depends(requires(StaffRole.EDITOR))]
Sender = Annotated[Staff, Depends(requires(StaffRole.SENDER))]
Admin = Annotated[Staff, Depends(requires(StaffRole.ADMIN))]


class InviteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Any = None
    role: Any = None


class StaffChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Any = None
    disabled: bool | None = None


def _staff_view(member: Staff) -> dict[str, Any]:
    return {
        "id": member.id,
        "email": member.email,
        "role": member.role.value,
        "disabled": member.disabled_at is not None,
        "created_at": member.created_at.isoformat(),
    }


@router.post("/staff", status_code=201)
def invite_staff(
    data: InviteIn, request: Request, who: Admin, session: SessionDep
) -> dict[str, Any]:
    """Invite someone: they are emailed a one-time link to set a password and a second factor."""
    role = members.parse_role(data.role)
    member, notice_id = members.invite(session, data.email, role, who)
    session.commit()
    notice_publisher.submit(notice_id)
    return {**_staff_view(member), "invited": True}


@router.patch("/staff/{staff_id}")
def change_staff(
    staff_id: Annotated[int, Path(ge=1, le=updates.MAX_ROW_ID)],
    data: StaffChangeIn,
    request: Request,
    who: Admin,
    session: SessionDep,
) -> dict[str, Any]:
    role = None if data.role is None else members.parse_role(data.role)
    member = members.staff_by_id(session, staff_id)
    if member is None:
        raise HTTPException(404, "No staff member has that id.")
    members.change_member(
        session, who, member, role=role, disabled=data.disabled, client_ip=client_ip(request)
    )
    session.commit()
    return _staff_view(member)


class UpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Any = None
    body: Any = None
    themes: Any = None
    published: Any = None  # shown in the public archive once sent; true unless given


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str


class SendIn(BaseModel):
    """Optional: the `fingerprint` of the version the sender reviewed (from GET); if the update
    changed since, the send is refused with 409."""

    model_config = ConfigDict(extra="forbid")
    fingerprint: str | None = None


class ScheduleIn(SendIn):
    send_at: str


def _view(session: Session, update_id: int) -> dict[str, Any]:
    update = updates.get(session, update_id)
    live = sending.progress(session, update_id)
    body = updates.as_json(update)
    body.update(live.as_json())
    for derived in ("done", "percent", "summary"):
        body.pop(derived)
    body["published"] = update.published
    body.update(deliverability.for_update(session, update_id))
    return body


def _publish(update: Update, published: Any) -> None:
    """Apply staff's archive choice, if they made one (checked before anything is stored)."""
    if published is None:
        return
    try:
        archive.set_published(update, published)
    except ValueError as exc:
        raise HTTPException(
            422, [{"loc": ["body", "published"], "msg": str(exc), "type": "value_error"}]
        ) from exc


@router.post("/updates", status_code=201)
def create_update(data: UpdateIn, who: Editor, session: SessionDep) -> dict[str, Any]:
    update = updates.create_draft(session, who.id, data.subject, data.body, data.themes)
    _publish(update, data.published)
    session.commit()
    assert update.id is not None
    return _view(session, update.id)


@router.get("/updates/{update_id}")
def get_update(update_id: int, who: Editor, session: SessionDep) -> dict[str, Any]:
    return _view(session, update_id)


@router.patch("/updates/{update_id}")
@router.put("/updates/{update_id}", include_in_schema=False)
def edit_update(update_id: int, data: UpdateIn, who: Editor, session: SessionDep) -> dict[str, Any]:
    update = updates.get(session, update_id)
    updates.edit_draft(
        session, who.id, update, subject=data.subject, body=data.body, themes=data.themes
    )
    _publish(update, data.published)
    session.commit()
    return _view(session, update_id)


@router.get("/updates/{update_id}/preview")
def preview_update(update_id: int, who: Editor, session: SessionDep) -> dict[str, Any]:
    shown = updates.preview(updates.get(session, update_id))
    return {"subject": shown.subject, "html": shown.html, "text": shown.text}


@router.post("/updates/{update_id}/test", status_code=202)
def test_update(update_id: int, data: TestIn, who: Editor, session: SessionDep) -> dict[str, Any]:
    """One copy marked as a test, to the caller or another staff member only."""
    test_copies.send(session, who, updates.get(session, update_id), data.to)
    session.commit()
    return {"status": "sent", "test": True}


@router.post("/updates/{update_id}/send", status_code=202)
def send_update(
    update_id: int,
    who: Sender,
    session: SessionDep,
    data: Annotated[SendIn | None, Body()] = None,
) -> JSONResponse:
    fingerprint = data.fingerprint if data else None
    review.check_send(session, updates.get(session, update_id), who.id, fingerprint)
    request = sending.request_send(
        session, update_id, who.id, publish_update_batches, fingerprint=fingerprint
    )
    _audit_by_token(session, who, update_id, AuditAction.SENT)
    session.commit()
    if request.started:
        review.tell_author_now(session, updates.get(session, update_id), who.id)
    body = _view(session, update_id)
    body["started"] = request.started
    return JSONResponse(body, status_code=202)


def _audit_by_token(session: Session, who: Staff, update_id: int, action: AuditAction) -> None:
    """A send or schedule done with an API token (no second factor) is audited as such: its
    audit row, just written, says so."""
    row = session.exec(
        select(AuditLog)
        .where(col(AuditLog.update_id) == update_id)
        .where(col(AuditLog.staff_id) == who.id)
        .where(col(AuditLog.action) == action.value)
        .order_by(col(AuditLog.id).desc())
    ).first()
    if row is not None and not (row.detail or "").endswith(BY_TOKEN):
        row.detail = f"{row.detail or ''}{BY_TOKEN}"[-500:]
        session.add(row)


def _send_at(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise Invalid({"send_at": "Give an ISO 8601 time with its offset."}) from exc
    if when.tzinfo is None:
        raise Invalid({"send_at": "Give the time with its offset, e.g. 2026-12-01T09:00+00:00."})
    return when


@router.post("/updates/{update_id}/schedule")
def schedule_update(
    update_id: int, data: ScheduleIn, who: Sender, session: SessionDep
) -> dict[str, Any]:
    review.check_send(session, updates.get(session, update_id), who.id, data.fingerprint)
    sending.schedule(
        session, update_id, who.id, _send_at(data.send_at), utcnow(), fingerprint=data.fingerprint
    )
    _audit_by_token(session, who, update_id, AuditAction.SCHEDULED)
    session.commit()
    return _view(session, update_id)


@router.delete("/updates/{update_id}/schedule")
def unschedule_update(update_id: int, who: Sender, session: SessionDep) -> dict[str, Any]:
    sending.unschedule(session, update_id, who.id)
    session.commit()
    return _view(session, update_id)


@router.post("/updates/{update_id}/pause")
def pause_update(update_id: int, who: Sender, session: SessionDep) -> dict[str, Any]:
    sending.pause(session, update_id, who.id)
    session.commit()
    return _view(session, update_id)


@router.post("/updates/{update_id}/resume")
def resume_update(update_id: int, who: Sender, session: SessionDep) -> dict[str, Any]:
    sending.resume(session, update_id, who.id, publish_update_batches)
    return _view(session, update_id)


@router.post("/updates/{update_id}/cancel")
def cancel_update(update_id: int, who: Sender, session: SessionDep) -> dict[str, Any]:
    sending.cancel(session, update_id, who.id)
    session.commit()
    return _view(session, update_id)


@router.post("/updates/{update_id}/review", status_code=202)
def ask_for_review(update_id: int, who: Editor, session: SessionDep) -> dict[str, Any]:
    """Ask the senders to review a draft: each is emailed a link to its send confirmation."""
    notice_ids = review.ask(session, updates.get(session, update_id), who)
    session.commit()
    for notice_id in notice_ids:
        notice_publisher.submit(notice_id)
    return {**_view(session, update_id), "reviewers": len(notice_ids)}


@router.get("/stats")
def stats(who: Editor, session: SessionDep) -> dict[str, Any]:
    """Counts only: subscribers by status, active subscribers by theme, updates by status."""
    return subscribers.stats(session)
