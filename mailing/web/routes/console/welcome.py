"""The one-time enrolment link (an invitation or a second-factor reset): choose a password, then
enrol a second factor at once, in the half-open session the link opens.

A GET only shows the form; the POST spends the link. A forged or over-age link gets 400 with a
page that says what to do, like every other link.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from mailing.errors import InvalidLink
from mailing.staff import invitations, members
from mailing.staff.audit import AuditAction
from mailing.staff.passwords import MIN_PASSWORD_LENGTH, WeakPassword
from mailing.web.deps import PublicPostLimit, SessionDep
from mailing.web.routes.console.common import console_page, console_router, record
from mailing.web.routes.console.signin import set_session_cookie

router = console_router()


def _page(token: str, status_code: int = 200, error: str = "", spent: str = "") -> Response:
    return console_page(
        "welcome",
        None,
        status_code=status_code,
        token=token,
        errors={"password": error} if error else {},
        spent=spent,
        min_length=MIN_PASSWORD_LENGTH,
    )


@router.get("/welcome/{token}")
def welcome_form(token: str, session: SessionDep) -> Response:
    try:
        invitations.check(session, token)
    except (InvalidLink, invitations.LinkSpent) as bad:
        return _page("", 400, spent=str(bad) if isinstance(bad, invitations.LinkSpent) else "")
    return _page(token)


@router.post("/welcome/{token}", dependencies=[PublicPostLimit])
async def welcome(token: str, request: Request, session: SessionDep) -> Response:
    try:
        invitation, staff = invitations.check(session, token)
    except (InvalidLink, invitations.LinkSpent) as bad:
        return _page("", 400, spent=str(bad) if isinstance(bad, invitations.LinkSpent) else "")
    form = await request.form()
    password = form.get("password")
    again = form.get("password_again")
    if not isinstance(password, str) or not password:
        return _page(token, 422, "Choose a password.")
    if password != again:
        return _page(token, 422, "The two passwords are not the same.")
    try:
        members.set_password(session, staff, password)
    except WeakPassword as weak:
        session.rollback()
        return _page(token, 422, str(weak))
    try:
        cookie = invitations.use(session, invitation, staff)
    except invitations.LinkSpent as spent:
        return _page("", 400, spent=str(spent))
    record(request, session, staff.id, AuditAction.STAFF_ENROLLED, invitation.reason)
    response = RedirectResponse("/admin/account", status_code=303)
    set_session_cookie(response, cookie)
    return response
