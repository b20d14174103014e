"""A subscriber's links: /unsubscribe, /preferences, /my-data, /erase and /erasure-requests.

Each works without a login, from a link in any email, in a mail client with no cookies. Any bad
link (forged, altered, expired, revoked, meant for another purpose) gets the 400 page. The links
in every update (unsubscribe, preferences) never open the data or erase it: those links are only
emailed, on request, to the subscriber's own address.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlmodel import Session

from mailing.config import get_settings
from mailing.db import session_scope
from mailing.models import Subscriber
from mailing.states import ConsentChannel, ErasureReason, NoticeKind
from mailing.subscribers import consent, erasure, links, records, rights
from mailing.subscribers import frequency as frequencies
from mailing.subscribers.addresses import Address, InvalidAddress, normalise
from mailing.subscribers.my_data import readable
from mailing.subscribers.tokens import EXPORT_MAX_AGE_SECONDS, LINK_PATHS, Purpose, route
from mailing.themes import theme_titles
from mailing.web.deps import PublicPostLimit, SessionDep, wants_json
from mailing.web.forms import FormErrors, frequency_field, read_body, text_field, theme_list
from mailing.web.pages import page
from workers.enqueue import notice_publisher

router = APIRouter(tags=["subscribers"])
log = logging.getLogger(__name__)

# What the preferences page's buttons (and JSON {"action": …}) ask for: the emailed link.
LINK_ACTIONS = {"export": NoticeKind.EXPORT_LINK, "erase": NoticeKind.ERASE_LINK}


# --- Unsubscribe ----------------------------------------------------------------------------


@router.get(route(Purpose.UNSUBSCRIBE), include_in_schema=False)
def unsubscribe_page(token: str, request: Request, session: SessionDep) -> Response:
    # Mail scanners follow GET links: a GET only shows the button.
    subscriber = links.subscriber_for(session, Purpose.UNSUBSCRIBE, token)
    return page(
        "unsubscribe",
        status=subscriber.status.value,
        preferences_url=links.url_for(Purpose.MANAGE, subscriber),
    )


# No per-IP limit here, unlike every other public POST: a mailbox provider sends the one-click
# unsubscribes of many people from a few addresses, and refusing one would mean mailing someone
# who asked us to stop.
@router.post(
    route(Purpose.UNSUBSCRIBE),
    responses={200: {"description": "Unsubscribed (also when already unsubscribed)"}, 400: {}},
)
async def unsubscribe(token: str, request: Request) -> Response:
    """One-click unsubscribe (RFC 8058): body `List-Unsubscribe=One-Click`, or empty."""
    body = await request.body()
    fields = parse_qs(body.decode("latin-1"), keep_blank_values=True) if body else {}
    by_page = fields.get("via") == ["page"]
    channel = ConsentChannel.EMAIL_LINK if by_page else ConsentChannel.ONE_CLICK
    preferences_url = await run_in_threadpool(_unsubscribe, token, channel)
    if wants_json(request):
        return JSONResponse({"status": "unsubscribed"})
    return _unsubscribed_page(preferences_url)


def _unsubscribe(token: str, channel: ConsentChannel) -> str:
    with session_scope() as session:
        subscriber = links.subscriber_for(session, Purpose.UNSUBSCRIBE, token)
        rights.unsubscribe(session, subscriber, channel=channel)
        return links.url_for(Purpose.MANAGE, subscriber)


def _unsubscribed_page(preferences_url: str, *, no_themes: bool = False) -> Response:
    return page(
        "unsubscribed",
        preferences_url=preferences_url,
        no_themes=no_themes,
        retention_days=get_settings().unsubscribed_retention_days,
    )


# --- Preferences ----------------------------------------------------------------------------


def _preferences_page(
    session: Session,
    subscriber: Subscriber,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    themes: list[str] | None = None,
) -> Response:
    assert subscriber.id is not None
    return page(
        "preferences",
        status_code=status_code,
        errors=errors or {},
        status=subscriber.status.value,
        themes=themes if themes is not None else records.themes_of(session, subscriber.id),
        frequency=subscriber.frequency.value,
        privacy_notice=consent.PRIVACY_NOTICE_TEXT,
        unsubscribe_url=links.url_for(Purpose.UNSUBSCRIBE, subscriber),
    )


@router.get(route(Purpose.MANAGE), include_in_schema=False)
def preferences_page(token: str, request: Request, session: SessionDep) -> Response:
    subscriber = links.subscriber_for(session, Purpose.MANAGE, token)
    return _preferences_page(session, subscriber)


@router.post(
    route(Purpose.MANAGE),
    dependencies=[PublicPostLimit],
    responses={200: {}, 400: {}, 409: {"description": "The subscription is not active"}, 422: {}},
)
async def change_preferences(token: str, request: Request) -> Response:
    """Change themes: JSON `{"themes": [slug…]}` or the form. No themes means unsubscribe.

    JSON `{"action": "export"}` or `{"action": "erase"}` (or the page's buttons) emails a
    download or erase link to the subscriber's own address instead: `202`.
    """
    try:
        body = await read_body(request)
    except FormErrors as exc:
        return exc.json()
    return await run_in_threadpool(_change_preferences, token, request, body.is_json, body.data)


def _change_preferences(
    token: str, request: Request, is_json: bool, data: dict[str, object]
) -> Response:
    with session_scope() as session:
        subscriber = links.subscriber_for(session, Purpose.MANAGE, token)
        errors: dict[str, str] = {}
        kind = _link_kind(data, is_json, errors)
        if kind is not None:
            return _email_link(session, request, subscriber, kind, is_json)
        if errors:  # a JSON "action" that is neither "export" nor "erase"
            return FormErrors(errors).json()
        frequency = frequency_field(data, errors)
        # JSON may change the frequency alone; the form always sends both.
        frequency_only = is_json and "themes" not in data and "frequency" in data
        # An empty POST must not unsubscribe anyone: JSON names its themes, the form says so.
        if is_json and "themes" not in data and not frequency_only:
            errors["themes"] = "Give 'themes': a list of theme names (an empty list unsubscribes)."
        elif not is_json and data.get("action") != "save":
            errors["themes"] = "Choose your themes and press the button to save them."
        themes = None if frequency_only else theme_list(data, errors, empty_means_all=False)
        if errors:
            if is_json:
                return FormErrors(errors).json()
            return _preferences_page(session, subscriber, status_code=422, errors=errors)
        channel = ConsentChannel.API if is_json else ConsentChannel.EMAIL_LINK
        # NotActive (409) unless the subscription is active: mailing/web/errors.py answers it.
        outcome = rights.change_preferences(session, subscriber, themes, frequency, channel=channel)
        preferences_url = links.url_for(Purpose.MANAGE, subscriber)
        chosen = records.themes_of(session, subscriber.id or 0)
        how_often = subscriber.frequency
    if outcome == rights.ThemesOutcome.UNSUBSCRIBED:
        if is_json:
            return JSONResponse({"status": "unsubscribed", "themes": []})
        return _unsubscribed_page(preferences_url, no_themes=True)
    if is_json:
        answer: dict[str, object] = {"status": "active", "themes": chosen}
        if "frequency" in data:  # the answer to a themes-only change stays as it always was
            answer["frequency"] = how_often.value
        return JSONResponse(answer)
    return page(
        "preferences_saved",
        themes=theme_titles(chosen),
        frequency=frequencies.DESCRIPTIONS[how_often],
        preferences_url=preferences_url,
    )


def _link_kind(data: dict[str, object], is_json: bool, errors: dict[str, str]) -> NoticeKind | None:
    """The emailed link asked for, if the body asks for one (JSON "action", or the buttons)."""
    action = data.get("action")
    if (is_json and action is None) or (not is_json and action == "save"):
        return None
    if isinstance(action, str) and action in LINK_ACTIONS:
        return LINK_ACTIONS[action]
    if is_json:
        errors["action"] = '\'action\' must be "export" or "erase".'
    return None


def _email_link(
    session: Session,
    request: Request,
    subscriber: Subscriber,
    kind: NoticeKind,
    is_json: bool,
) -> Response:
    # 202 whether or not the hourly cap lets it go: the page says so.
    notice_id = erasure.request_link(session, subscriber, kind)
    session.commit()
    if notice_id is not None:
        notice_publisher.submit(notice_id)
        log.info("subscriber %s asked for an emailed %s", subscriber.id, kind.value)
    if is_json or wants_json(request):
        return JSONResponse({"status": "accepted"}, status_code=202)
    return page(
        "link_sent",
        status_code=202,
        kind="export" if kind == NoticeKind.EXPORT_LINK else "erase",
        hours=EXPORT_MAX_AGE_SECONDS // 3600,
        days=get_settings().erase_max_age_days,
        preferences_url=links.url_for(Purpose.MANAGE, subscriber),
    )


# --- Right of access ------------------------------------------------------------------------


@router.get(route(Purpose.EXPORT), responses={200: {"description": "Everything we hold"}, 400: {}})
def my_data(token: str, request: Request, session: SessionDep, format: str = "") -> Response:
    """Everything held about the subscriber, as a JSON download (from the emailed link only);
    a browser gets it as a page in words, with a link to the JSON."""
    subscriber = links.subscriber_for(session, Purpose.EXPORT, token)
    log.info("subscriber %s downloaded their data", subscriber.id)
    data = rights.export(session, subscriber)
    # A browser gets the page in words, which links to the JSON (?format=json); any other
    # client gets the JSON, as the contract says.
    if "text/html" in request.headers.get("accept", "") and format != "json":
        json_url = f"{LINK_PATHS[Purpose.EXPORT]}{token}?format=json"
        return page("my_data", json_url=json_url, **readable(data))
    return JSONResponse(
        data, headers={"Content-Disposition": 'attachment; filename="my-data.json"'}
    )


# --- Right to erasure -----------------------------------------------------------------------


@router.get(route(Purpose.ERASE), include_in_schema=False)
def erase_page(token: str, request: Request, session: SessionDep) -> Response:
    links.subscriber_for(session, Purpose.ERASE, token)
    return page("erase")


@router.post(route(Purpose.ERASE), dependencies=[PublicPostLimit], responses={200: {}, 400: {}})
def erase(token: str, request: Request, session: SessionDep) -> Response:
    """Erase the subscriber now: everything but a keyed hash that stops us mailing them again."""
    subscriber = links.subscriber_for(session, Purpose.ERASE, token)
    erasure.erase(session, subscriber, ErasureReason.REQUEST)
    session.commit()
    if wants_json(request):
        return JSONResponse({"status": "erased"})
    return page("erased")


@router.get("/erasure-requests", include_in_schema=False)
def erasure_request_form() -> Response:
    return page("erasure_request")


@router.post(
    "/erasure-requests",
    status_code=202,
    dependencies=[PublicPostLimit],
    responses={202: {"description": "Accepted: the same answer for every address"}, 422: {}},
)
async def request_erasure(request: Request, background: BackgroundTasks) -> Response:
    """Ask for an erase link by email; known or not, the answer is the same."""
    try:
        body = await read_body(request)
    except FormErrors as exc:
        return exc.json()
    errors: dict[str, str] = {}
    raw = text_field(body.data, "email", errors, limit=254)
    honeypot = bool(text_field(body.data, "website", errors))
    address = None
    if not errors:
        try:
            address = normalise(raw)
        except InvalidAddress as exc:
            errors["email"] = str(exc)
    if errors or address is None:
        if body.is_json or wants_json(request):
            return FormErrors(errors).json()
        return page("erasure_request", status_code=422, errors=errors, values={"email": raw})
    if not honeypot:
        # After the answer is sent, so its timing says nothing about whether we know the address.
        background.add_task(_send_erase_link, address)
    if body.is_json:
        return JSONResponse({"status": "accepted"}, status_code=202)
    return page("erasure_requested", status_code=202, days=get_settings().erase_max_age_days)


def _send_erase_link(address: Address) -> None:
    try:
        with session_scope() as session:
            notice_id = erasure.request_erasure(session, address)
        if notice_id is not None:
            notice_publisher.submit(notice_id)
    except Exception:  # the answer is already sent; the person can ask again
        log.exception("could not queue an erase link")
