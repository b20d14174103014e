"""The staff console: HTML pages under /admin, signed in with email and password.

Paths here never collide with the JSON API (/admin/updates..., /admin/stats). Every POST needs
the session's CSRF token; roles are checked exactly as the API checks them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from sqlmodel import Session

from mailing import archive, console, figures, sending, updates
from mailing.config import get_settings
from mailing.mailer import PermanentFailure, TransientFailure
from mailing.models import Update, utcnow
from mailing.staff import audit
from mailing.states import StaffRole, UpdateStatus, role_allows
from mailing.web.deps import PublicPostLimit, SessionDep
from mailing.web.pages import page
from workers.enqueue import enqueue_update_send

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


log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", route_class=ConsoleRoute, include_in_schema=False)


# ---------------------------------------------------------------------------------------------
# Who is asking


def _set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=get_settings().is_production,
    )


def _forget_cookie(response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=get_settings().is_production,
    )


def console_page(
    name: str, who: console.SignedIn | None, status_code: int = 200, **context: Any
) -> Response:
    response = page(f"admin/{name}", status_code=status_code, who=who, **context)
    # Staff pages are personal and change with every send: never cache them.
    response.headers["Cache-Control"] = "no-store"
    return response


def forbidden(who: console.SignedIn, needed: str) -> Interrupt:
    return Interrupt(console_page("forbidden", who, status_code=403, needed=needed))


def current_staff(request: Request, session: SessionDep) -> console.SignedIn:
    who = console.signed_in(session, request.cookies.get(SESSION_COOKIE))
    if who is None:
        target = "/admin/login"
        if request.method == "GET" and request.url.path != "/admin":
            target += "?next=" + request.url.path
        response = RedirectResponse(target, status_code=303)
        if SESSION_COOKIE in request.cookies:
            _forget_cookie(response, SESSION_COOKIE)
        raise Interrupt(response)
    return who


Who = Annotated[console.SignedIn, Depends(current_staff)]
# Ids in paths fit the database's integer column: anything else is a 422, not a database error.
RowId = Annotated[int, Path(ge=1, le=updates.MAX_ROW_ID)]


async def checked_form(request: Request, who: Who) -> dict[str, Any]:
    """The posted form, after its CSRF token matched the session's; else a 403 page.

    Values are text (the last one given), except `themes`, which is a list.
    """
    form = await request.form()
    if not console.csrf_ok(who, form.get("csrf_token")):
        raise Interrupt(console_page("csrf", who, status_code=403))
    data: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    data["themes"] = [v for v in form.getlist("themes") if isinstance(v, str)]
    return data


Form = Annotated[dict[str, Any], Depends(checked_form)]


def need(who: console.SignedIn, role: StaffRole) -> None:
    if not role_allows(who.staff.role, role):
        raise forbidden(who, role.value)


# ---------------------------------------------------------------------------------------------
# Signing in and out


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
    _set_cookie(response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, session: SessionDep, next: str = "") -> Response:
    if console.signed_in(session, request.cookies.get(SESSION_COOKIE)):
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
        member, token = console.sign_in(session, email, password)
    except console.SignInFailed as failed:
        status = 429 if str(failed) == console.LOCKED else 401
        return _login_page(status, {"email": str(failed)}, email, next_path)
    _audit(session, member.id, "console-sign-in")
    response = RedirectResponse(next_path, status_code=303)
    _set_cookie(
        response, SESSION_COOKIE, token, max_age=int(console.SESSION_LIFETIME.total_seconds())
    )
    _forget_cookie(response, LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, who: Who, form: Form, session: SessionDep) -> Response:
    console.sign_out(session, request.cookies.get(SESSION_COOKIE))
    _audit(session, who.staff.id, "console-sign-out")
    response = RedirectResponse("/admin/login?signed-out=1", status_code=303)
    _forget_cookie(response, SESSION_COOKIE)
    return response


# ---------------------------------------------------------------------------------------------
# Updates


@router.get("")
def dashboard(who: Who, session: SessionDep) -> Response:
    figures.record_snapshot(session)
    recent = console.recent_updates(session)
    return console_page(
        "dashboard",
        who,
        updates=recent,
        active_total=figures.active_total(session),
        drafts=sum(1 for u in recent if u.status == UpdateStatus.DRAFT),
        sent_count=sum(1 for u in recent if u.status != UpdateStatus.DRAFT),
        nav="updates",
    )


@router.get("/compose")
def compose_form(who: Who, session: SessionDep) -> Response:
    return _compose_page(who, session, 200, {}, {"themes": [], "published": True})


@router.post("/compose")
def compose(who: Who, form: Form, session: SessionDep) -> Response:
    try:
        update = updates.create_draft(
            session, who.staff.id, form.get("subject"), form.get("body"), form["themes"]
        )
    except updates.InvalidUpdate as bad:
        return _compose_page(who, session, 422, _in_page_order(bad.errors), _values(form))
    archive.set_published(update, _values(form)["published"])
    session.commit()
    return RedirectResponse(f"/admin/drafts/{update.id}?saved=1", status_code=303)


def _compose_page(
    who: console.SignedIn,
    session: Session,
    status_code: int,
    errors: dict[str, str],
    values: dict[str, object],
) -> Response:
    return console_page(
        "compose",
        who,
        status_code=status_code,
        errors=errors,
        values=values,
        active=figures.active_by_theme(session),
        nav="compose",
    )


NOTICES = {
    "saved": "Your draft is saved.",
    "tested": "A test copy is on its way to {email}.",
}


@router.get("/drafts/{update_id}")
def draft_page(update_id: RowId, request: Request, who: Who, session: SessionDep) -> Response:
    update = _update_or_404(session, who, update_id)
    if update.status != UpdateStatus.DRAFT:
        return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
    notice = next((m for k, m in NOTICES.items() if k in request.query_params), "")
    return _draft_page(
        who,
        session,
        update,
        200,
        {},
        {
            "subject": update.subject,
            "body": update.body,
            "themes": updates.themes_of(update),
            "published": update.published,
        },
        notice.format(email=who.staff.email),
    )


@router.post("/drafts/{update_id}")
def edit_draft(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    update = _update_or_404(session, who, update_id)
    if update.status != UpdateStatus.DRAFT:
        return _not_a_draft(who, update)
    try:
        updates.edit_draft(
            session,
            who.staff.id,
            update,
            subject=form.get("subject", ""),
            body=form.get("body", ""),
            themes=form["themes"],
        )
    except updates.InvalidUpdate as bad:
        session.rollback()
        errors = _in_page_order(bad.errors)
        return _draft_page(who, session, update, 422, errors, _values(form), "")
    except updates.NotADraft:
        return _not_a_draft(who, update)
    archive.set_published(update, _values(form)["published"])
    session.commit()
    return RedirectResponse(f"/admin/drafts/{update_id}?saved=1", status_code=303)


def _draft_page(
    who: console.SignedIn,
    session: Session,
    update: Update,
    status_code: int,
    errors: dict[str, str],
    values: dict[str, object],
    notice: str,
) -> Response:
    return console_page(
        "draft",
        who,
        status_code=status_code,
        update=update,
        errors=errors,
        values=values,
        notice=notice,
        active=figures.active_by_theme(session),
        can_send=role_allows(who.staff.role, StaffRole.SENDER),
        nav="updates",
    )


# The email preview is the only page that may be framed, and only by the console itself. Inline
# style is how emails are styled; nothing else (no script, no remote image) may load.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'none'"
)


@router.get("/drafts/{update_id}/preview")
def preview(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update = _update_or_404(session, who, update_id)
    return HTMLResponse(
        updates.preview(update).html,
        headers={
            "Content-Security-Policy": PREVIEW_CSP,
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        },
    )


@router.get("/drafts/{update_id}/test")
def test_form(update_id: RowId) -> Response:
    return RedirectResponse(f"/admin/drafts/{update_id}", status_code=303)


@router.post("/drafts/{update_id}/test")
def send_test(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    update = _update_or_404(session, who, update_id)
    try:
        updates.send_test(session, who.staff.id, update, who.staff.email)
    except (TransientFailure, PermanentFailure):
        if update.status != UpdateStatus.DRAFT:
            return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
        return _draft_page(
            who,
            session,
            update,
            502,
            {"test": "The mail server did not take the test email. Try again in a minute."},
            {"subject": update.subject, "body": update.body, "themes": updates.themes_of(update)},
            "",
        )
    session.commit()
    if update.status != UpdateStatus.DRAFT:
        return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
    return RedirectResponse(f"/admin/drafts/{update_id}?tested=1", status_code=303)


@router.get("/drafts/{update_id}/send")
def confirm_send(update_id: RowId, who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.SENDER)
    update = _update_or_404(session, who, update_id)
    if update.status != UpdateStatus.DRAFT:
        return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)
    return console_page(
        "send",
        who,
        update=update,
        themes=updates.themes_of(update),
        recipients=sending.count_recipients(session, updates.themes_of(update)),
        nav="updates",
    )


@router.post("/drafts/{update_id}/send")
def send(update_id: RowId, who: Who, form: Form, session: SessionDep) -> Response:
    need(who, StaffRole.SENDER)
    update = _update_or_404(session, who, update_id)
    if update.status == UpdateStatus.DRAFT:
        started = sending.start_send(session, update_id, who.staff.id)
        session.commit()
        if started.started:
            try:
                enqueue_update_send(update_id)
            except Exception:
                # The send is committed; the beat's reconcile task re-drives it within a minute.
                log.warning(
                    "update %s: could not reach the broker; reconcile will start it", update_id
                )
    # Sending twice sends nothing more: a second press just shows the progress.
    return RedirectResponse(f"/admin/drafts/{update_id}/progress", status_code=303)


@router.get("/drafts/{update_id}/progress")
def progress_page(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update = _update_or_404(session, who, update_id)
    show = who.staff.role == StaffRole.ADMIN
    return console_page(
        "progress",
        who,
        update=update,
        p=console.progress(session, update),
        failures=console.failed_deliveries(session, update_id, show_addresses=show),
        show_addresses=show,
        nav="updates",
    )


@router.get("/drafts/{update_id}/progress.json")
def progress_json(update_id: RowId, who: Who, session: SessionDep) -> Response:
    update = _update_or_404(session, who, update_id)
    return JSONResponse(
        console.progress(session, update).as_json(), headers={"Cache-Control": "no-store"}
    )


def _update_or_404(session: Session, who: console.SignedIn, update_id: int) -> Update:
    update = session.get(Update, update_id)
    if update is None:
        raise Interrupt(console_page("not_found", who, status_code=404))
    return update


def _not_a_draft(who: console.SignedIn, update: Update) -> Response:
    return console_page("not_a_draft", who, status_code=409, update=update)


def _in_page_order(errors: dict[str, str]) -> dict[str, str]:
    # The error summary lists problems in the order the fields appear on the page.
    order = {name: i for i, name in enumerate(("subject", "themes", "body"))}
    return dict(sorted(errors.items(), key=lambda item: order.get(item[0], len(order))))


def _values(form: dict[str, Any]) -> dict[str, object]:
    return {
        "subject": form.get("subject", ""),
        "body": form.get("body", ""),
        "themes": form.get("themes") or [],
        # An unticked box is simply absent from the form: absent means not published.
        "published": form.get("published") == "yes",
    }


# ---------------------------------------------------------------------------------------------
# Figures, audit log, staff


@router.get("/figures")
def figures_page(who: Who, session: SessionDep) -> Response:
    figures.record_snapshot(session)
    history = figures.active_history(session)
    return console_page(
        "figures",
        who,
        counts=figures.counts_by_theme(session),
        history=history,
        chart=figures.chart(history),
        nav="figures",
    )


@router.get("/audit")
def audit_page(who: Who, session: SessionDep) -> Response:
    return console_page(
        "audit",
        who,
        entries=console.audit_entries(session, show_addresses=who.staff.role == StaffRole.ADMIN),
        nav="audit",
    )


def _staff_page(
    who: console.SignedIn, session: Session, status_code: int = 200, **context: Any
) -> Response:
    return console_page(
        "staff",
        who,
        status_code=status_code,
        members=console.all_staff(session),
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
    member = console.staff_by_id(session, staff_id)
    if member is None:
        return console_page("not_found", who, status_code=404)
    if member.id == who.staff.id:
        return _staff_page(
            who, session, 409, errors={"staff": "You cannot disable yourself: ask another admin."}
        )
    if member.disabled_at is None:
        console.disable(session, member)
        audit(session, who.staff.id, "staff-disabled", detail=f"staff {member.id}")
        session.commit()
    return RedirectResponse("/admin/staff", status_code=303)


def _audit(session: Session, staff_id: int | None, action: str) -> None:
    audit(session, staff_id, action)
    session.commit()
