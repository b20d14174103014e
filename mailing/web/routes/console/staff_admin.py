"""Staff administration in the console (admins only): the list of staff with their API tokens'
issue, expiry and last use; revoking a token; disabling a member. Changes need a recent factor.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from mailing.audit import AuditAction
from mailing.models import Staff, utcnow
from mailing.staff import apitokens, members
from mailing.staff.sessions import SignedIn
from mailing.states import StaffRole
from mailing.web.deps import SessionDep
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

router = console_router()


def _staff_page(
    who: SignedIn, session: Session, status_code: int = 200, **context: Any
) -> Response:
    return console_page(
        "staff",
        who,
        status_code=status_code,
        members=members.all_staff(session),
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
def staff_page(who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    return _staff_page(who, session)


@router.post("/staff/{staff_id}/disable")
def disable_staff(
    request: Request, staff_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    member = _member(session, who, staff_id)
    if member.id == who.staff.id:
        return _staff_page(
            who, session, 409, errors={"staff": "You cannot disable yourself: ask another admin."}
        )
    if member.disabled_at is None:
        members.disable(session, member)
        record(request, session, who.staff.id, AuditAction.STAFF_DISABLED, f"staff {member.id}")
    return RedirectResponse("/admin/staff", status_code=303)


@router.post("/staff/{staff_id}/revoke-token")
def revoke_token(
    request: Request, staff_id: RowId, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    member = _member(session, who, staff_id)
    if member.token_revoked_at is None:
        apitokens.revoke_token(session, member)
        record(request, session, who.staff.id, AuditAction.API_TOKEN_REVOKED, f"staff {member.id}")
    return RedirectResponse("/admin/staff", status_code=303)
