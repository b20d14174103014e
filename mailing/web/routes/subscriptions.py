"""Sign-up and confirmation: GET /, POST /subscriptions, GET and POST /confirm/{token}."""

from __future__ import annotations

import asyncio
import logging
from weakref import WeakKeyDictionary

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from mailing import consent, subscribers, subscriptions
from mailing.config import get_settings
from mailing.db import session_scope
from mailing.metrics import CONFIRMATIONS, SIGNUPS
from mailing.themes import theme_titles
from mailing.tokens import InvalidToken, Purpose, verify
from mailing.web.deps import PublicPostLimit, SessionDep, wants_json
from mailing.web.forms import FormErrors, Signup, SubscriptionIn, parse_signup, read_body
from mailing.web.pages import invalid_link, page
from workers.enqueue import publish_notice

router = APIRouter(tags=["residents"])
log = logging.getLogger(__name__)

ACCEPTED = {"status": "pending"}
SIGNUP_THREADS = 4


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
        await anyio.to_thread.run_sync(
            _accept, signup, "api" if body.is_json else "form", limiter=_signup_limiter()
        )
    else:
        SIGNUPS.labels("honeypot").inc()
    if body.is_json:
        return JSONResponse(ACCEPTED, status_code=202)
    return RedirectResponse("/check-your-email", status_code=303)


_limiters: WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = WeakKeyDictionary()


def _signup_limiter() -> anyio.CapacityLimiter:
    """A few threads per process do the database and broker work of sign-ups; the rest wait on
    the event loop. More threads only fight over the GIL: under load, throughput falls and the
    slowest answers get slower. One limiter per event loop, as its waiters belong to a loop."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(SIGNUP_THREADS)
    return limiter


def _accept(signup: Signup, channel: str) -> None:
    with session_scope() as session:
        notice_id = subscriptions.request_subscription(
            session,
            signup.address,
            signup.themes,
            channel=channel,
            source=signup.source,
            frequency=signup.frequency,
        )
    SIGNUPS.labels("capped" if notice_id is None else "accepted").inc()
    if notice_id is not None:
        # Committed with the request: if the broker loses this, the reconciler sends it.
        publish_notice(notice_id)


@router.get("/check-your-email", include_in_schema=False)
def check_email() -> Response:
    return page("check_email", days=get_settings().confirm_max_age_days)


@router.get("/confirm/{token}", include_in_schema=False)
def confirm_page(token: str, session: SessionDep) -> Response:
    # Mail scanners follow GET links: a GET only shows the button, it never gives consent.
    try:
        subscriptions.confirmable(session, verify(Purpose.CONFIRM, token))
    except InvalidToken as exc:
        return invalid_link(exc.reason)
    return page("confirm")


@router.post("/confirm/{token}", dependencies=[PublicPostLimit])
def confirm(token: str, request: Request, session: SessionDep) -> Response:
    """Confirm a subscription from the link in the confirmation email; repeating it is harmless."""
    try:
        subscriber, welcome = subscriptions.confirm(session, verify(Purpose.CONFIRM, token))
    except InvalidToken as exc:
        if wants_json(request):
            return JSONResponse(
                {"detail": "This link is not valid or has expired."}, status_code=400
            )
        return invalid_link(exc.reason)
    session.commit()
    themes = subscribers.themes_of(session, subscriber.id or 0)
    if welcome is not None:
        CONFIRMATIONS.inc()
        log.info("subscriber %s confirmed", subscriber.id)
        # Queued in the outbox with the confirmation: if the broker loses this, it still goes.
        publish_notice(welcome)
    if wants_json(request):
        return JSONResponse({"status": "active", "themes": themes})
    return page("confirmed", themes=theme_titles(themes))
