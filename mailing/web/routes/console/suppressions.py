"""The console's storm page (admins only): list the suppressions one update or one time window
caused, reinstate those a bounce or a relay's 5xx caused, and re-send an update to the copies
the relay refused in the window. The page's forms post to its own path, /admin/storm (the JSON
API has /admin/suppressions).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlmodel import Session

from mailing.deliverability import storm, suppressions
from mailing.errors import Conflict, Invalid
from mailing.staff.sessions import SignedIn
from mailing.states import StaffRole
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import (
    Form,
    RecentSecondFactor,
    Who,
    console_page,
    console_router,
    need,
)
from mailing.web.routes.suppressions_api import selection
from workers.enqueue import publish_update_batches

router = console_router()
FIELDS = ("update_id", "cause", "since", "until")


def _page(
    who: SignedIn, session: Session, asked: dict[str, Any], status_code: int = 200, **extra: Any
) -> Response:
    found = None
    errors = extra.pop("errors", {})
    if any(asked.get(f) for f in FIELDS):
        try:
            found = suppressions.listing(session, selection(*(asked.get(f) for f in FIELDS)))
        except Invalid as exc:
            errors = {**exc.errors, **errors}
            status_code = 422
    return console_page(
        "suppressions",
        who,
        status_code=status_code,
        asked=asked,
        found=found,
        causes=[c.value for c in suppressions.Cause],
        errors=errors,
        nav="suppressions",
        **extra,
    )


@router.get("/storm")
def suppressions_page(request: Request, who: Who, session: SessionDep) -> Response:
    need(who, StaffRole.ADMIN)
    return _page(who, session, {f: request.query_params.get(f, "") for f in FIELDS})


@router.post("/storm")
def suppressions_act(
    request: Request, who: RecentSecondFactor, form: Form, session: SessionDep
) -> Response:
    need(who, StaffRole.ADMIN)
    asked = {f: str(form.get(f, "")) for f in FIELDS}
    reason = str(form.get("reason", "")).strip()[:300]
    try:
        chosen = selection(*(asked[f] for f in FIELDS))
        if not reason:
            raise Invalid({"reason": "Say why (it goes in the audit log)."})
        if form.get("action") == "resend":
            if chosen.update_id is None or chosen.since is None or chosen.until is None:
                raise Invalid({"update_id": "Re-sending needs an update and a time window."})
            done = storm.resend_failed(
                session,
                who.staff.id,
                chosen.update_id,
                chosen.since,
                chosen.until,
                reason,
                publish_update_batches,
            )
            message = f"{done} copies queued again."
        else:
            done = suppressions.reinstate(session, who.staff.id, chosen, reason)
            session.commit()
            message = f"{done} people reinstated."
    except (Invalid, Conflict) as exc:
        session.rollback()
        errors = exc.errors if isinstance(exc, Invalid) else {"update_id": str(exc)}
        return _page(who, session, asked, 422 if isinstance(exc, Invalid) else 409, errors=errors)
    return _page(who, session, asked, message=message)
