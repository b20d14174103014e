"""Sign-up and confirmation: GET /, POST /subscriptions, GET and POST /confirm/{token}."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from mailing.config import get_settings
from mailing.db import session_scope
from mailing.errors import InvalidLink
from mailing.metrics import CONFIRMATIONS, SIGNUPS
from mailing.states import ConsentChannel
from mailing.subscribers import consent, records, signup
from mailing.subscribers.signup import SignupRequest
from mailing.subscribers.tokens import CHECK_EMAIL_MAX_AGE_SECONDS, Purpose, route, sign, verify
from mailing.themes import theme_titles
from mailing.web.deps import PublicPostLimit, SessionDep, wants_json
from mailing.web.forms import FormErrors, SubscriptionIn, parse_signup, read_body
from mailing.web.pages import page
from mailing.web.signup_batch import batcher_for_loop
from workers.enqueue import notice_publisher

router = APIRouter(tags=["residents"])
log = logging.getLogger(__name__)

ACCEPTED = {"status": "pending"}
CHECK_EMAIL_COOKIE = "check_email"


def signup_page(
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, object] | None = None,
) -> Response:
    return page(
        "signup",
        status_code=status_code,
        errors=errors or {},
        values=values or {},
        consent_text=consent.CONSENT_TEXT,
        privacy_notice=consent.PRIVACY_NOTICE_TEXT,
    )


@router.get("/", include_in_schema=False)
def signup_form() -> Response:
    return signup_page()


@router.post(
    "/subscriptions",
    status_code=202,
    dependencies=[PublicPostLimit],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SubscriptionIn.model_json_schema()}},
        }
    },
    responses={202: {"description": "Accepted: the same answer for every address"}, 422: {}},
)
async def subscribe(request: Request) -> Response:
    """Ask for a subscription; a confirmation (or already-subscribed) email follows."""
    try:
        body = await read_body(request)
        signup = parse_signup(
            body.data, from_form=not body.is_json, referer=request.headers.get("referer")
        )
    except FormErrors as exc:
        SIGNUPS.labels("invalid").inc()
        if wants_json(request):
            return exc.json()
        return signup_page(422, exc.errors, exc.values)
    if not signup.honeypot:
        request_ = SignupRequest(
            signup.address,
            signup.themes,
            ConsentChannel.API if body.is_json else ConsentChannel.FORM,
            signup.source,
            signup.frequency,
        )
        await batcher_for_loop(_write).accept(request_)
    else:
        SIGNUPS.labels("honeypot").inc()
    if body.is_json:
        return JSONResponse(ACCEPTED, status_code=202)
    answer = RedirectResponse("/check-your-email", status_code=303)
    # The address typed goes back in a short-lived signed cookie, never in the URL or a log,
    # so the next page can show it and a typo can be spotted.
    answer.set_cookie(
        CHECK_EMAIL_COOKIE,
        sign(Purpose.CHECK_EMAIL, {"s": 0, "a": signup.address.email}),  # s: no subscriber
        max_age=CHECK_EMAIL_MAX_AGE_SECONDS,
        path="/check-your-email",
        httponly=True,
        samesite="lax",  # sent after a sign-up from the embedded form on another site
        secure=get_settings().is_production,
    )
    return answer


def _write(requests: Sequence[SignupRequest]) -> list[int | None]:
    """Store sign-ups in one transaction, then hand their notices to the publisher."""
    with session_scope() as session:
        notice_ids = signup.request_subscriptions(session, requests)
    for notice_id in notice_ids:
        SIGNUPS.labels("capped" if notice_id is None else "accepted").inc()
        if notice_id is not None:
            # Committed with the request: if the broker loses this, the reconciler sends it.
            notice_publisher.submit(notice_id)
    return notice_ids


@router.get("/check-your-email", include_in_schema=False)
def check_email(request: Request) -> Response:
    address: object = None
    try:
        address = verify(Purpose.CHECK_EMAIL, request.cookies.get(CHECK_EMAIL_COOKIE, "")).get("a")
    except InvalidLink:
        pass
    answer = page(
        "check_email",
        days=get_settings().confirm_max_age_days,
        address=address if isinstance(address, str) else None,
    )
    if isinstance(address, str):
        answer.headers["cache-control"] = "no-store"
    return answer


@router.get(route(Purpose.CONFIRM), include_in_schema=False)
def confirm_page(token: str, session: SessionDep) -> Response:
    # Mail scanners follow GET links: a GET only shows the button, it never gives consent.
    signup.confirmable(session, verify(Purpose.CONFIRM, token))
    return page("confirm")


@router.post(route(Purpose.CONFIRM), dependencies=[PublicPostLimit])
def confirm(token: str, request: Request, session: SessionDep) -> Response:
    """Confirm a subscription from the link in the confirmation email; repeating it is harmless."""
    subscriber, welcome = signup.confirm(session, verify(Purpose.CONFIRM, token))
    session.commit()
    themes = records.themes_of(session, subscriber.id or 0)
    if welcome is not None:
        CONFIRMATIONS.inc()
        log.info("subscriber %s confirmed", subscriber.id)
        # Queued in the outbox with the confirmation: if the broker loses this, it still goes.
        notice_publisher.submit(welcome)
    if wants_json(request):
        return JSONResponse({"status": "active", "themes": themes})
    return page("confirmed", themes=theme_titles(themes))
