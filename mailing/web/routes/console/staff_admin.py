"""Staff administration in the console (admins only): the list of staff, and disabling one."""

from __future__ import annotations

from typing import Any

from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from mailing.audit import AuditAction, audit
from mailing.models import utcnow
from mailing.staff import members
from mailing.staff.sessions import SignedIn
from mailing.states import StaffRole
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import (
    Form,
    RowId,
    Who,
    console_page,
    console_router,
    need,
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
        now=utcnow(),
        nav="staff",
        **context,
    )


@router.get("/staff")
def staff_page(who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    return _staff_page(who, session)


@router.post("/staff/{staff_id}/disable")
def disable_staff(staff_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    member = members.staff_by_id(session, staff_id)
    if member is None:
        return console_page("not_found", who, status_code=404)
    if member.id == who.staff.id:
        return _staff_page(
            who, session, 409, errors={"staff": "You cannot disable yourself: ask another admin."}
        )
    if member.disabled_at is None:
        members.disable(session, member)
        audit(session, who.staff.id, AuditAction.STAFF_DISABLED, detail=f"staff {member.id}")
        session.commit()
    return RedirectResponse("/admin/staff", status_code=303)
