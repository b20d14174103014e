"""Signing in to the console and out of it: the password, then a second factor.

The sign-in form carries its own CSRF token in a short-lived cookie, since there is no session
yet; `next` only ever leads to a console path. The password opens a half-open session that
reaches only the second-factor step (or, for someone with no factor yet, enrolment); giving
the factor replaces it with a full session under a new token.
"""

from __future__ import annotations

import secrets

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlmodel import Session

from mailing.staff import passkeys, sessions, signin
from mailing.staff.audit import AuditAction
from mailing.staff.factors import has_factor
from mailing.staff.sessions import SignedIn
from mailing.web.deps import PublicPostLimit, SessionDep, client_ip
from mailing.web.routes.console.common import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Form,
    Pending,
    PendingForm,
    Who,
    console_page,
    console_router,
    forget_cookie,
    give_factor,
    passkey_ceremony,
    record,
    set_cookie,
)
from workers.enqueue import notice_publisher

router = console_router()


def safe_next(value: object) -> str:
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
    if sessions.signed_in(session, request.cookies.get(SESSION_COOKIE), pending=False):
        return RedirectResponse(safe_next(next), status_code=303)
    notice = "You have signed out." if request.query_params.get("signed-out") else ""
    return _login_page(200, next_path=safe_next(next), notice=notice)


@router.post("/login", dependencies=[PublicPostLimit])
async def login(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    email = form.get("email")
    password = form.get("password")
    next_path = safe_next(form.get("next"))
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
        member, token = signin.sign_in(session, email, password, client_ip(request))
    except signin.SignInFailed as failed:
        if failed.staff_id is not None:
            record(request, session, failed.staff_id, AuditAction.SIGN_IN_FAILED)
        return refused(_login_page(401, {"email": failed.message}, email, next_path), failed)
    # Someone with no factor yet enrols one now: the console opens only after that.
    step = "/admin/login/second-factor" if has_factor(session, member) else "/admin/account"
    response = RedirectResponse(f"{step}?next={next_path}", status_code=303)
    set_session_cookie(response, token)
    forget_cookie(response, LOGIN_CSRF_COOKIE)
    return response


def refused(response: Response, failed: signin.SignInFailed) -> Response:
    """A refused sign-in step: 401, or 429 with Retry-After while the throttle holds; the
    notices to admins it queued go out."""
    if failed.retry_after:
        response.status_code = 429
        response.headers["Retry-After"] = str(failed.retry_after)
    for notice_id in failed.notices:
        notice_publisher.submit(notice_id)
    return response


def set_session_cookie(response: Response, token: str) -> None:
    set_cookie(
        response, SESSION_COOKIE, token, max_age=int(sessions.SESSION_LIFETIME.total_seconds())
    )


@router.get("/login/second-factor")
def second_factor_form(who: Pending, session: SessionDep, next: str = "") -> Response:
    if who.complete:
        return RedirectResponse(safe_next(next), status_code=303)
    if not has_factor(session, who.staff):
        return RedirectResponse(f"/admin/account?next={safe_next(next)}", status_code=303)
    return _second_factor_page(session, who, 200, safe_next(next))


def _second_factor_page(
    session: Session, who: SignedIn, status_code: int, next_path: str, error: str = ""
) -> Response:
    return console_page(
        "second_factor",
        None,
        status_code=status_code,
        csrf=who.csrf_token,
        next_path=next_path,
        errors={"second_factor_code": error} if error else {},
        has_passkey=has_factor(session, who.staff, passkey=True),
    )


@router.post("/login/second-factor", dependencies=[PublicPostLimit])
def second_factor(
    request: Request, who: Pending, form: PendingForm, session: SessionDep
) -> Response:
    next_path = safe_next(form.get("next"))
    if who.complete:
        return RedirectResponse(next_path, status_code=303)
    if not form.get("credential") and not (form.get("second_factor_code") or "").strip():
        return _second_factor_page(session, who, 422, next_path, "Enter a code.")
    try:
        accepted = give_factor(session, who, form)
    except signin.SignInFailed as failed:
        record(request, session, who.staff.id, AuditAction.SECOND_FACTOR_FAILED)
        return refused(_second_factor_page(session, who, 401, next_path, failed.message), failed)
    token = sessions.complete_session(session, who)
    record(request, session, who.staff.id, AuditAction.CONSOLE_SIGN_IN, accepted.kind)
    if accepted.recovery_left is None:
        response: Response = RedirectResponse(next_path, status_code=303)
    else:
        record(
            request,
            session,
            who.staff.id,
            AuditAction.RECOVERY_CODE_USED,
            f"{accepted.recovery_left} left",
        )
        full = sessions.signed_in(session, token)
        response = console_page(
            "recovery_used", full, left=accepted.recovery_left, next_path=next_path
        )
    set_session_cookie(response, token)
    return response


@router.post("/passkey/options")
def passkey_options(who: Pending, form: PendingForm, session: SessionDep) -> Response:
    """The options for proving a passkey (sign-in or a re-check); the challenge waits in the
    session until the answer comes."""
    if not has_factor(session, who.staff, passkey=True):
        return JSONResponse({"error": "You have no passkey set up."}, status_code=404)
    return passkey_ceremony(session, who, passkeys.authentication_options)


@router.post("/logout")
def logout(request: Request, who: Who, form: Form, session: SessionDep) -> Response:
    sessions.sign_out(session, request.cookies.get(SESSION_COOKIE))
    record(request, session, who.staff.id, AuditAction.CONSOLE_SIGN_OUT)
    response = RedirectResponse("/admin/login?signed-out=1", status_code=303)
    forget_cookie(response, SESSION_COOKIE)
    return response
