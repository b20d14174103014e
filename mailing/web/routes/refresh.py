"""The consent refresh's "keep me on the list" link (subscribers/refresh.py): a GET shows a button,
only the POST renews (a mail scanner following links must not renew anyone's consent)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from mailing.config import get_settings
from mailing.models import utcnow
from mailing.states import SubscriberStatus
from mailing.subscribers import links, refresh
from mailing.subscribers.consent import CONSENT_TEXT
from mailing.subscribers.tokens import Purpose, route
from mailing.web.deps import PublicPostLimit, SessionDep, wants_json
from mailing.web.pages import page

router = APIRouter()


def _page(status: str, status_code: int = 200) -> Response:
    return page(
        "stay",
        status_code=status_code,
        status=status,
        wording=CONSENT_TEXT,
        years=get_settings().consent_refresh_years,
    )


@router.get(route(Purpose.STAY), include_in_schema=False)
def stay_page(token: str, session: SessionDep) -> Response:
    subscriber = links.subscriber_for(session, Purpose.STAY, token)
    active = subscriber.status == SubscriberStatus.ACTIVE
    return _page("active" if active else "gone")


@router.post(route(Purpose.STAY), dependencies=[PublicPostLimit], responses={200: {}, 400: {}})
def stay(token: str, request: Request, session: SessionDep) -> Response:
    """Renew consent: `200`, JSON `{"status": "renewed"}` when asked for JSON; `409` if they are
    no longer subscribed."""
    subscriber = links.subscriber_for(session, Purpose.STAY, token)
    renewed = refresh.renew(session, subscriber, utcnow())
    session.commit()
    status, code = ("renewed", 200) if renewed else ("gone", 409)
    if wants_json(request):
        return JSONResponse({"status": status}, status_code=code)
    return _page(status, code)
