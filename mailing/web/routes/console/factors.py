"""A staff member's own second factors: enrol an authenticator app or a passkey, name and remove
them, and make new recovery codes; and the page that asks for a factor again (re-check).

At the first sign-in after 2FA came in, a half-open session (password only) may enrol a first
factor here and nothing else; every later change needs a factor given in the last 10 minutes.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from sqlmodel import Session

from mailing.staff import factors, passkeys, sessions, totp
from mailing.staff.audit import AuditAction
from mailing.staff.sessions import SignedIn
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import (
    AccountHolder,
    Form,
    Interrupt,
    PendingForm,
    RecentSecondFactor,
    RowId,
    Who,
    console_page,
    console_router,
    insist_on_recent_factor,
    passkey_ceremony,
    record,
)
from mailing.web.routes.console.signin import safe_next, set_session_cookie

router = console_router()

NOTICES = {
    "added": "Your new second factor is set up.",
    "renamed": "The name is changed.",
    "removed": "That second factor is removed.",
}


def _page(
    session: Session, who: SignedIn, name: str, status_code: int = 200, **context: Any
) -> Response:
    # A half-open session sees no console navigation: it may only enrol.
    return console_page(
        name,
        who if who.complete else None,
        status_code=status_code,
        csrf=who.csrf_token,
        first=not who.complete,
        nav="account",
        **context,
    )


def _need_recent_for_page(who: SignedIn, path: str) -> None:
    if who.complete and not who.factor_is_recent():
        raise Interrupt(RedirectResponse(f"/admin/reauth?next={path}", status_code=303))


def _recent(request: Request, session: Session, who: SignedIn, form: dict[str, Any]) -> SignedIn:
    # The first enrolment has no factor to ask for; everything after it does.
    return insist_on_recent_factor(request, session, who, form) if who.complete else who


@router.get("/account")
def account_page(
    request: Request, who: AccountHolder, session: SessionDep, next: str = ""
) -> Response:
    _need_recent_for_page(who, "/admin/account")
    notice = next_notice(request)
    return _page(
        session,
        who,
        "account",
        factors=factors.factors_of(session, who.staff),
        recovery_left=factors.recovery_codes_left(session, who.staff),
        notice=notice,
        next_path=safe_next(next),
        errors={},
    )


def next_notice(request: Request) -> str:
    return next((m for k, m in NOTICES.items() if k in request.query_params), "")


@router.get("/account/totp")
def totp_form(who: AccountHolder, session: SessionDep, next: str = "") -> Response:
    _need_recent_for_page(who, "/admin/account/totp")
    return _totp_page(session, who, 200, totp.new_secret(), safe_next(next), {}, "")


def _totp_page(
    session: Session,
    who: SignedIn,
    status_code: int,
    secret: str,
    next_path: str,
    errors: dict[str, str],
    name: str,
) -> Response:
    uri = totp.provisioning_uri(secret, who.staff.email)
    return _page(
        session,
        who,
        "totp",
        status_code=status_code,
        secret=secret,
        grouped_secret=totp.grouped(secret),
        qr_svg=totp.qr_svg(uri),
        next_path=next_path,
        errors=errors,
        factor_name=name,
    )


@router.post("/account/totp")
def add_totp(
    request: Request, who: AccountHolder, form: PendingForm, session: SessionDep
) -> Response:
    who = _recent(request, session, who, form)
    next_path = safe_next(form.get("next"))
    secret = form.get("secret")
    try:
        factors.add_totp(session, who.staff, secret, form.get("code"), form.get("name"))
    except factors.FactorError as bad:
        session.rollback()
        if not totp.valid_secret(secret):
            secret = totp.new_secret()
        assert isinstance(secret, str)
        name = str(form.get("name") or "")[: factors.MAX_FACTOR_NAME]
        return _totp_page(session, who, 422, secret, next_path, {"code": str(bad)}, name)
    return _enrolled(request, session, who, "authenticator app", next_path)


def _enrolled(
    request: Request, session: Session, who: SignedIn, kind: str, next_path: str
) -> Response:
    session.commit()
    record(request, session, who.staff.id, AuditAction.FACTOR_ADDED, kind)
    if who.complete:
        return RedirectResponse("/admin/account?added=1", status_code=303)
    # The first factor: the session becomes a full one (a new token), and the recovery codes
    # are shown, this once.
    token = sessions.complete_session(session, who)
    record(request, session, who.staff.id, AuditAction.CONSOLE_SIGN_IN, f"enrolled {kind}")
    full = sessions.signed_in(session, token)
    assert full is not None
    response = _recovery_codes(request, session, full, next_path)
    set_session_cookie(response, token)
    return response


def _recovery_codes(request: Request, session: Session, who: SignedIn, next_path: str) -> Response:
    codes = factors.new_recovery_codes(session, who.staff)
    session.commit()
    record(request, session, who.staff.id, AuditAction.RECOVERY_CODES_REPLACED)
    return _page(session, who, "recovery_codes", codes=codes, next_path=next_path)


@router.post("/account/passkey/options")
def passkey_options(
    request: Request, who: AccountHolder, form: PendingForm, session: SessionDep
) -> Response:
    if who.complete and not who.factor_is_recent():
        return JSONResponse({"error": "Confirm it is you first: reload the page."}, status_code=401)
    return passkey_ceremony(session, who, passkeys.registration_options)


@router.post("/account/passkey")
def add_passkey(
    request: Request, who: AccountHolder, form: PendingForm, session: SessionDep
) -> Response:
    who = _recent(request, session, who, form)
    next_path = safe_next(form.get("next"))
    registration = form.get("registration") or ""
    try:
        passkeys.register(
            session,
            who.staff,
            registration.encode(),
            sessions.take_challenge(session, who),
            form.get("name"),
        )
    except (passkeys.PasskeyError, factors.FactorError) as bad:
        session.rollback()
        return _page(
            session,
            who,
            "account",
            status_code=422,
            factors=factors.factors_of(session, who.staff),
            recovery_left=factors.recovery_codes_left(session, who.staff),
            notice="",
            next_path=next_path,
            errors={"passkey-name": str(bad)},
        )
    return _enrolled(request, session, who, "passkey", next_path)


@router.post("/account/factors/{factor_id}/rename")
def rename_factor(
    request: Request,
    factor_id: RowId,
    who: RecentSecondFactor,
    form: Form,
    session: SessionDep,
) -> Response:
    factor = factors.factor_of(session, who.staff, factor_id)
    if factor is None:
        return console_page("not_found", who, status_code=404)
    try:
        factor.name = factors.clean_name(form.get("name"), factor.name)
    except factors.FactorError as bad:
        return _account_error(session, who, {f"name-{factor_id}": str(bad)})
    session.add(factor)
    session.commit()
    record(request, session, who.staff.id, AuditAction.FACTOR_RENAMED, f"factor {factor_id}")
    return RedirectResponse("/admin/account?renamed=1", status_code=303)


def _account_error(session: Session, who: SignedIn, errors: dict[str, str]) -> Response:
    session.rollback()
    return _page(
        session,
        who,
        "account",
        status_code=409 if "factors" in errors else 422,
        factors=factors.factors_of(session, who.staff),
        recovery_left=factors.recovery_codes_left(session, who.staff),
        notice="",
        next_path="/admin",
        errors=errors,
    )


@router.post("/account/factors/{factor_id}/remove")
def remove_factor(
    request: Request, factor_id: RowId, who: RecentSecondFactor, session: SessionDep
) -> Response:
    factor = factors.factor_of(session, who.staff, factor_id)
    if factor is None:
        return console_page("not_found", who, status_code=404)
    try:
        factors.remove_factor(session, who.staff, factor)
    except factors.FactorError as bad:
        return _account_error(session, who, {"factors": str(bad)})
    session.commit()
    record(request, session, who.staff.id, AuditAction.FACTOR_REMOVED, f"factor {factor_id}")
    return RedirectResponse("/admin/account?removed=1", status_code=303)


@router.post("/account/recovery-codes")
def replace_recovery_codes(
    request: Request, who: RecentSecondFactor, session: SessionDep
) -> Response:
    return _recovery_codes(request, session, who, "/admin/account")


@router.post("/account/recovery-codes/download")
def download_recovery_codes(who: Who, form: Form, session: SessionDep) -> Response:
    """The codes just shown, as a text file (works without JavaScript: the page posts them
    back). Only this person's unspent codes are echoed, and nothing keeps a copy."""
    codes = str(form.get("codes") or "").split()
    if not factors.are_live_recovery_codes(session, who.staff, codes):
        return PlainTextResponse(
            "Those are not your current recovery codes: make new ones on your account page.",
            status_code=422,
            headers={"Cache-Control": "no-store"},
        )
    text = (
        "Health Inequalities Strategy updates, staff console: recovery codes\n"
        f"for {who.staff.email}. Each code signs you in once; keep them safe.\n\n"
        + "\n".join(codes)
        + "\n"
    )
    return PlainTextResponse(
        text,
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="recovery-codes.txt"',
        },
    )


@router.get("/reauth")
def reauth_form(request: Request, who: Who, session: SessionDep, next: str = "") -> Response:
    """Asks for a second factor, then goes on to `next` (a page that needs a recent one)."""
    if who.factor_is_recent():
        return RedirectResponse(safe_next(next), status_code=303)
    return console_page(
        "reauth",
        who,
        action="/admin/reauth",
        kept={"next": safe_next(next)},
        kept_themes=[],
        errors={},
        has_passkey=factors.has_factor(session, who.staff, passkey=True),
    )


@router.post("/reauth")
def reauth(who: RecentSecondFactor, form: Form) -> Response:
    return RedirectResponse(safe_next(form.get("next")), status_code=303)
