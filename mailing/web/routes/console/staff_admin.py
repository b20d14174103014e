"""Staff administration in the console (admins only): the list of staff with their API tokens'
issue, expiry and last use; inviting someone (an emailed one-time set-up link); changing a role;
disabling or re-enabling a member; sending a new set-up link (which resets their second factors);
revoking a token. Every change needs a recent second factor and is audited.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from mailing.errors import MailingError
from mailing.models import Staff, utcnow
from mailing.staff import apitokens, invitations, members
from mailing.staff.audit import AuditAction
from mailing.staff.sessions import SignedIn
from mailing.states import StaffRole
from mailing.web.deps import SessionDep, client_ip
from mailing.web.routes.console.common import (
    Form,
    Interrupt,
    RecentSecondFactor,
    RowId,
    Who,
    console_page,
    console_router,
    need,
    record,
)
from workers.enqueue import notice_publisher

router = console_router()


def _staff_page(
    who: SignedIn, session: Session, status_code: int = 200, **context: Any
) -> Response:
    return console_page(
        "staff",
        who,
        status_code=status_code,
        members=members.all_staff(session),
        roles=[r.value for r in StaffRole],
        open_link=lambda m: invitations.open_link(session, m),
        notice=context.pop("notice", ""),
        expires=apitokens.token_expires_at,
        now=utcnow(),
        nav="staff",
        **context,
    )


def _member(session: Session, who: SignedIn, staff_id: int) -> Staff:
    """The staff member an admin acts on; a 403 for non-admins, a 404 for an unknown id."""
    need(who, StaffRole.ADMIN)
    member = members.staff_by_id(session, staff_id)
    if member is None:
        raise Interrupt(console_page("not_found", who, status_code=404))
    return member


@router.get("/staff")
def staff_page(request: Request, who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    notice = next((m for k, m in NOTICES.items() if k in request.query_params), "")
    return _staff_page(who, session, notice=notice)


@router.post("/staff/{staff_id}/disable")
def disable_staff(
    request: Request, staff_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    member = _member(session, who, staff_id)
    return _change(request, session, who, member, disabled=True)


@router.post("/staff/{staff_id}/revoke-token")
def revoke_token(
    request: Request, staff_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    member = _member(session, who, staff_id)
    if member.token_revoked_at is None:
        apitokens.revoke_token(session, member)
        record(request, session, who.staff.id, AuditAction.API_TOKEN_REVOKED, f"staff {member.id}")
    return RedirectResponse("/admin/staff", status_code=303)


NOTICES = {
    "invited": "The invitation is sent: they have 72 hours to set up their account.",
    "changed": "The change is saved.",
    "link": "A new set-up link is sent; their old second factors no longer work.",
}


@router.get("/staff/invite")
def invite_form(who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    return _invite_page(who)


def _invite_page(
    who: SignedIn, status_code: int = 200, errors: dict[str, str] | None = None, **values: str
) -> Response:
    return console_page(
        "staff_invite",
        who,
        status_code=status_code,
        errors=errors or {},
        values=values,
        roles=[r.value for r in StaffRole],
        nav="staff",
    )


@router.post("/staff/invite")
def invite(request: Request, who: RecentSecondFactor, form: Form, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    email = str(form.get("email") or "")[:254]
    role = str(form.get("role") or "")
    try:
        member, notice_id = members.invite(session, email, members.parse_role(role), who.staff)
    except MailingError as bad:
        session.rollback()
        errors = getattr(bad, "errors", None) or {"email": bad.message}
        return _invite_page(who, bad.status_code, errors, email=email, role=role)
    record(request, session, who.staff.id, AuditAction.STAFF_INVITED, f"staff {member.id}")
    notice_publisher.submit(notice_id)
    return RedirectResponse("/admin/staff?invited=1", status_code=303)


@router.post("/staff/{staff_id}/role")
def change_role(
    request: Request, staff_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    member = _member(session, who, staff_id)
    return _change(request, session, who, member, role=form.get("role"))


@router.post("/staff/{staff_id}/enable")
def enable_staff(
    request: Request, staff_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    member = _member(session, who, staff_id)
    return _change(request, session, who, member, disabled=False)


def _change(
    request: Request,
    session: Session,
    who: SignedIn,
    member: Staff,
    *,
    role: object = None,
    disabled: bool | None = None,
) -> Response:
    try:
        members.change_member(
            session,
            who.staff,
            member,
            role=None if role is None else members.parse_role(role),
            disabled=disabled,
            client_ip=client_ip(request),
        )
    except MailingError as bad:
        session.rollback()
        message = "; ".join(getattr(bad, "errors", {}).values()) or bad.message
        return _staff_page(who, session, bad.status_code, errors={"staff": message})
    session.commit()
    return RedirectResponse("/admin/staff?changed=1", status_code=303)


@router.post("/staff/{staff_id}/enrolment-link")
def send_enrolment_link(
    request: Request, staff_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    """Lost phone or key: their factors are cleared and a new one-time link is emailed."""
    member = _member(session, who, staff_id)
    if member.disabled_at is not None or member.id == who.staff.id:
        message = "Only another admin can do this, and only for someone enabled."
        return _staff_page(who, session, 409, errors={"staff": message})
    notice_id = invitations.reset_and_issue(session, member, who.staff.id)
    record(request, session, who.staff.id, AuditAction.STAFF_ENROLMENT_LINK, f"staff {member.id}")
    notice_publisher.submit(notice_id)
    return RedirectResponse("/admin/staff?link=1", status_code=303)
