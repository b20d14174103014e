"""Single sign-on pages: "Sign in with {provider}" and "Confirm with {provider}" send the browser
to the OpenID Connect provider; its answer comes back to /admin/login/sso/callback.

The round trip's state, nonce and PKCE verifier travel in a signed cookie (SameSite=Lax, since
the provider's redirect back is a cross-site navigation), cleared when the answer comes. The
rules are in mailing/staff/sso.py.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from mailing.config import get_settings
from mailing.staff import sessions, sso
from mailing.staff.audit import AuditAction
from mailing.web.deps import PublicPostLimit, SessionDep
from mailing.web.routes.console.common import (
    SESSION_COOKIE,
    Who,
    console_page,
    console_router,
    record,
)
from mailing.web.routes.console.signin import safe_next, set_session_cookie

router = console_router()
FLOW_COOKIE = "admin_sso_flow"
FLOW_PATH = "/admin"


def _callback_url() -> str:
    return f"{get_settings().base_url}/admin/login/sso/callback"


def _refused(message: str, status_code: int) -> Response:
    response = console_page("sso_refused", None, status_code=status_code, message=message)
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH)
    return response


def _go(next_path: str, reauth_of: str | None) -> Response:
    if not sso.enabled():
        return console_page("not_found", None, status_code=404)
    try:
        url, flow = sso.start(_callback_url(), next_path, reauth_of)
    except sso.SsoRefused as failed:
        return _refused(str(failed), failed.status_code)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        flow,
        max_age=600,
        path=FLOW_PATH,
        httponly=True,
        samesite="lax",
        secure=get_settings().is_production,
    )
    return response


@router.get("/login/sso", dependencies=[PublicPostLimit])
def sso_sign_in(next: str = "") -> Response:
    return _go(safe_next(next), None)


@router.get("/reauth/sso")
def sso_recheck(who: Who) -> Response:
    return _go("/admin", who.session_key)


@router.get("/login/sso/callback", dependencies=[PublicPostLimit])
def sso_callback(request: Request, session: SessionDep) -> Response:
    if not sso.enabled():
        return console_page("not_found", None, status_code=404)
    query = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
    try:
        outcome = sso.finish(session, request.cookies.get(FLOW_COOKIE), query, _callback_url())
    except sso.SsoRefused as failed:
        session.rollback()
        return _refused(str(failed), failed.status_code)
    staff_id = outcome.staff.id
    if outcome.reauth_of:
        who = sessions.signed_in(session, request.cookies.get(SESSION_COOKIE))
        if (
            who is None
            or who.session_key != outcome.reauth_of
            or who.staff.id != staff_id
            or not outcome.mfa
        ):
            message = (
                "That confirmation was for someone else, or the provider did not report a "
                "multi-factor sign-in: use your own second factor instead."
            )
            return _refused(message, 403)
        sessions.factor_given(session, who)
        record(request, session, staff_id, AuditAction.REAUTHENTICATED, "single sign-on (mfa)")
        response: Response = RedirectResponse(outcome.next_path, status_code=303)
    elif outcome.mfa:
        token = sessions.start_session(session, outcome.staff, with_factor=True)
        record(request, session, staff_id, AuditAction.CONSOLE_SIGN_IN, "single sign-on (mfa)")
        response = RedirectResponse(outcome.next_path, status_code=303)
        set_session_cookie(response, token)
    else:
        # No multi-factor sign-in reported: our own second factor is still asked.
        token = sessions.start_session(session, outcome.staff)
        response = RedirectResponse(
            f"/admin/login/second-factor?next={outcome.next_path}", status_code=303
        )
        set_session_cookie(response, token)
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH)
    return response
