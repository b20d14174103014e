"""What every console page shares: who is asking, cookies, the page wrapper, CSRF-checked forms,
role checks, and the answer that stops a request early (a sign-in redirect, a 403 or 404 page).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from sqlmodel import Session

from mailing import updates
from mailing.config import get_settings
from mailing.models import Staff, Update
from mailing.staff import invitations, passkeys, signin
from mailing.staff.audit import AuditAction, audit
from mailing.staff.factors import CodeAccepted, has_factor
from mailing.staff.sessions import (
    SignedIn,
    csrf_ok,
    factor_given,
    set_challenge,
    signed_in,
    take_challenge,
)
from mailing.states import StaffRole, role_allows
from mailing.web.deps import SessionDep, client_ip
from mailing.web.pages import page

SESSION_COOKIE = "admin_session"
LOGIN_CSRF_COOKIE = "admin_login_csrf"
COOKIE_PATH = "/admin"


class Interrupt(Exception):
    """Stops a console request with a ready answer (sign-in redirect, 403 page)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Interrupt as stop:
                return stop.response

        return guarded


def console_router() -> APIRouter:
    """A router for one group of console pages; the package's __init__ joins them."""
    return APIRouter(prefix="/admin", route_class=ConsoleRoute, include_in_schema=False)


def set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=get_settings().is_production,
    )


def forget_cookie(response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=get_settings().is_production,
    )


def console_page(
    name: str, who: SignedIn | None, status_code: int = 200, **context: Any
) -> Response:
    response = page(f"admin/{name}", status_code=status_code, who=who, **context)
    # Staff pages are personal and change with every send: never cache them.
    response.headers["Cache-Control"] = "no-store"
    return response


def forbidden(who: SignedIn, needed: str) -> Interrupt:
    return Interrupt(console_page("forbidden", who, status_code=403, needed=needed))


def current_staff(request: Request, session: SessionDep) -> SignedIn:
    token = request.cookies.get(SESSION_COOKIE)
    who = signed_in(session, token)
    if who is None:
        # A half-open session (password only) is sent on to its second-factor step.
        half_open = signed_in(session, token, pending=True) is not None
        target = "/admin/login/second-factor" if half_open else "/admin/login"
        if request.method == "GET" and request.url.path != "/admin":
            target += "?next=" + request.url.path
        response = RedirectResponse(target, status_code=303)
        if token and not half_open:
            forget_cookie(response, SESSION_COOKIE)
        raise Interrupt(response)
    return who


Who = Annotated[SignedIn, Depends(current_staff)]
# Ids in paths fit the database's integer column: anything else is a 422, not a database error.
RowId = Annotated[int, Path(ge=1, le=updates.MAX_ROW_ID)]


async def checked_form(request: Request, who: Who) -> dict[str, Any]:
    """The posted form, after its CSRF token matched the session's; else a 403 page.

    Values are text (the last one given), except `themes`, which is a list.
    """
    form = await request.form()
    if not csrf_ok(who, form.get("csrf_token")):
        raise Interrupt(console_page("csrf", who, status_code=403))
    data: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    data["themes"] = [v for v in form.getlist("themes") if isinstance(v, str)]
    return data


Form = Annotated[dict[str, Any], Depends(checked_form)]


def pending_staff(request: Request, session: SessionDep) -> SignedIn:
    """A session past its password, with or without its second factor yet."""
    who = signed_in(session, request.cookies.get(SESSION_COOKIE), pending=True)
    if who is None:
        response = RedirectResponse("/admin/login", status_code=303)
        forget_cookie(response, SESSION_COOKIE)
        raise Interrupt(response)
    return who


Pending = Annotated[SignedIn, Depends(pending_staff)]


async def pending_form(request: Request, who: Pending) -> dict[str, Any]:
    """The posted form of a half-open session, after its CSRF token matched; else a 403 page."""
    form = await request.form()
    if not csrf_ok(who, form.get("csrf_token")):
        raise Interrupt(console_page("csrf", None, status_code=403))
    return {k: v for k, v in form.items() if isinstance(v, str)}


PendingForm = Annotated[dict[str, Any], Depends(pending_form)]


def account_holder(request: Request, session: SessionDep, who: Pending) -> SignedIn:
    """Who may manage second factors: a full session, or a half-open one with none to give yet
    (the first enrolment). A half-open session whose owner has a factor must give it first."""
    if not who.complete and has_factor(session, who.staff):
        raise Interrupt(RedirectResponse("/admin/login/second-factor", status_code=303))
    if not who.complete and not invitations.may_enrol_first_factor(
        session, who.staff, who.session_key
    ):
        # Someone sent a one-time link enrols only through it, never with a password alone.
        raise Interrupt(console_page("enrol_by_link", None, status_code=403))
    return who


AccountHolder = Annotated[SignedIn, Depends(account_holder)]


def record(
    request: Request,
    session: Session,
    staff_id: int | None,
    action: AuditAction,
    detail: str | None = None,
) -> None:
    """An audit row with the client IP, committed at once."""
    audit(session, staff_id, action, detail=detail, client_ip=client_ip(request))
    session.commit()


def give_factor(session: Session, who: SignedIn, form: dict[str, Any]) -> CodeAccepted:
    """Check the second factor a form carries: a passkey's answer (`credential`, for this
    session's pending challenge) or a typed `second_factor_code`. Raises SignInFailed. In a
    full session it is a re-check, limited per session only."""
    credential = form.get("credential")
    return signin.second_factor(
        session,
        who.staff,
        code=form.get("second_factor_code"),
        credential=credential,
        challenge=take_challenge(session, who) if credential else None,
        recheck=who.session_key if who.complete else None,
    )


def passkey_ceremony(
    session: Session, who: SignedIn, options: Callable[[Session, Staff, bytes], str]
) -> Response:
    """A WebAuthn ceremony's options as JSON; its challenge waits in the session, spent by the
    answer."""
    challenge = passkeys.new_challenge()
    set_challenge(session, who, passkeys.challenge_text(challenge))
    return Response(
        options(session, who.staff, challenge),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def insist_on_recent_factor(
    request: Request, session: Session, who: SignedIn, form: dict[str, Any]
) -> SignedIn:
    """Carry on only if a second factor was given in the last 10 minutes. Otherwise answer with
    a page asking for one, whose form posts this same request again (every field kept) with the
    code or passkey answer added; when that checks out, the action goes ahead."""
    if who.factor_is_recent():
        return who
    error, retry_after = "", None
    if form.get("second_factor_code") or form.get("credential"):
        try:
            accepted = give_factor(session, who, form)
        except signin.SignInFailed as failed:
            record(request, session, who.staff.id, AuditAction.SECOND_FACTOR_FAILED)
            error, retry_after = failed.message, failed.retry_after
        else:
            record(request, session, who.staff.id, AuditAction.REAUTHENTICATED, accepted.kind)
            return factor_given(session, who)
    kept = {
        k: v
        for k, v in form.items()
        if k not in ("csrf_token", "second_factor_code", "credential", "themes")
    }
    answer = console_page(
        "reauth",
        who,
        status_code=429 if retry_after else 401,
        action=request.url.path,
        kept=kept,
        kept_themes=form.get("themes") or [],
        errors={"second_factor_code": error} if error else {},
        has_passkey=has_factor(session, who.staff, passkey=True),
    )
    if retry_after:
        answer.headers["Retry-After"] = str(retry_after)
    raise Interrupt(answer)


async def recent_second_factor(
    request: Request, who: Who, form: Form, session: SessionDep
) -> SignedIn:
    return insist_on_recent_factor(request, session, who, form)


# Dangerous actions (sending or scheduling, cancelling, disabling staff, managing factors) take
# this instead of Who: a second factor within the last 10 minutes, else the console asks first.
RecentSecondFactor = Annotated[SignedIn, Depends(recent_second_factor)]


def need(who: SignedIn, role: StaffRole) -> None:
    if not role_allows(who.staff.role, role):
        raise forbidden(who, role.value)


def update_or_404(session: Session, who: SignedIn, update_id: int) -> Update:
    update = session.get(Update, update_id)
    if update is None:
        raise Interrupt(console_page("not_found", who, status_code=404))
    return update
