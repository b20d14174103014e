"""Signing in to the console and out of it.

The sign-in form carries its own CSRF token in a short-lived cookie, since there is no session
yet; `next` only ever leads to a console path.
"""

from __future__ import annotations

import secrets

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from mailing.audit import AuditAction, audit
from mailing.staff import sessions, signin
from mailing.web.deps import PublicPostLimit, SessionDep
from mailing.web.routes.console.common import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Form,
    Who,
    console_page,
    console_router,
    forget_cookie,
    set_cookie,
)

router = console_router()


def _safe_next(value: object) -> str:
    if (
        isinstance(value, str)
        and value.startswith("/admin")
        and "//" not in value
        and len(value) < 200
        and all(c.isalnum() or c in "/-_." for c in value)
    ):
        return value
    return "/admin"


def _login_page(
    status_code: int,
    errors: dict[str, str] | None = None,
    email: str = "",
    next_path: str = "/admin",
    notice: str = "",
) -> Response:
    token = secrets.token_urlsafe(32)
    response = console_page(
        "login",
        None,
        status_code=status_code,
        errors=errors or {},
        values={"email": email},
        next_path=next_path,
        login_csrf=token,
        notice=notice,
    )
    set_cookie(response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, session: SessionDep, next: str = "") -> Response:
    if sessions.signed_in(session, request.cookies.get(SESSION_COOKIE)):
        return RedirectResponse(_safe_next(next), status_code=303)
    notice = "You have signed out." if request.query_params.get("signed-out") else ""
    return _login_page(200, next_path=_safe_next(next), notice=notice)


@router.post("/login", dependencies=[PublicPostLimit])
async def login(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    email = form.get("email")
    password = form.get("password")
    next_path = _safe_next(form.get("next"))
    email = email if isinstance(email, str) and len(email) <= 254 else ""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    supplied = form.get("csrf_token")
    if not (
        expected
        and isinstance(supplied, str)
        and secrets.compare_digest(expected.encode(), supplied.encode())
    ):
        return _login_page(
            403,
            {"email": "The sign-in form had expired. Please sign in again."},
            email,
            next_path,
        )
    errors: dict[str, str] = {}
    if not email.strip():
        errors["email"] = "Enter your email address."
    if not isinstance(password, str) or not password:
        errors["password"] = "Enter your password."  # noqa: S105 (a message, not a secret)
    if errors:
        return _login_page(422, errors, email, next_path)
    assert isinstance(password, str)
    try:
        member, token = signin.sign_in(session, email, password)
    except signin.SignInFailed as failed:
        status = 429 if str(failed) == signin.LOCKED else 401
        return _login_page(status, {"email": str(failed)}, email, next_path)
    _audit(session, member.id, AuditAction.CONSOLE_SIGN_IN)
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(
        response, SESSION_COOKIE, token, max_age=int(sessions.SESSION_LIFETIME.total_seconds())
    )
    forget_cookie(response, LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, who: Who, form: Form, session: SessionDep) -> Response:
    sessions.sign_out(session, request.cookies.get(SESSION_COOKIE))
    _audit(session, who.staff.id, AuditAction.CONSOLE_SIGN_OUT)
    response = RedirectResponse("/admin/login?signed-out=1", status_code=303)
    forget_cookie(response, SESSION_COOKIE)
    return response


def _audit(session: Session, staff_id: int | None, action: AuditAction) -> None:
    audit(session, staff_id, action)
    session.commit()
