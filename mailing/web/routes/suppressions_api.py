"""The admin API for undoing a storm: list the suppressions one update or one time window caused,
reinstate those a bounce or a relay's 5xx caused, and re-send an update to the copies the relay
refused in a window (mailing/deliverability/suppressions.py, storm.py). Admins only; answers
name subscribers by id, never by address; every change is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from mailing.deliverability import storm, suppressions
from mailing.errors import Invalid
from mailing.models import Staff
from mailing.states import StaffRole
from mailing.web.deps import SessionDep
from mailing.web.routes.admin_api import requires
from workers.enqueue import publish_update_batches

router = APIRouter(prefix="/admin", tags=["staff"])

Admin = Annotated[Staff, Depends(requires(StaffRole.ADMIN))]


def _time(name: str, value: str | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid({name: "Give an ISO 8601 time with its offset."}) from None
    return parsed


def selection(
    update_id: Any = None, cause: Any = None, since: Any = None, until: Any = None
) -> suppressions.Selection:
    """A Selection from untrusted values (query parameters, a JSON body or a form)."""
    try:
        chosen = suppressions.Cause(cause) if cause not in (None, "") else None
    except ValueError:
        raise Invalid({"cause": "One of bounce, complaint, relay-5xx, unsubscribe."}) from None
    if update_id in (None, ""):
        update = None
    elif isinstance(update_id, int) or (isinstance(update_id, str) and update_id.isdigit()):
        update = int(update_id)
    else:
        raise Invalid({"update_id": "A whole number."})
    found = suppressions.Selection(
        update_id=update,
        cause=chosen,
        since=_time("since", since if isinstance(since, str) or since is None else "bad"),
        until=_time("until", until if isinstance(until, str) or until is None else "bad"),
    )
    found.check()
    return found


class SelectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    update_id: Any = None
    cause: Any = None
    since: Any = None
    until: Any = None
    reason: Any = None


class ResendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: Any = None
    until: Any = None
    reason: Any = None


def _reason(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid({"reason": "Say why (it goes in the audit log)."})
    return value.strip()[:300]


@router.get("/suppressions")
def list_suppressions(
    who: Admin,
    session: SessionDep,
    update_id: str | None = None,
    cause: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    return suppressions.listing(session, selection(update_id, cause, since, until))


@router.post("/suppressions/reinstate")
def reinstate(data: SelectionIn, who: Admin, session: SessionDep) -> dict[str, int]:
    chosen = selection(data.update_id, data.cause, data.since, data.until)
    reason = _reason(data.reason)
    count = suppressions.reinstate(session, who.id, chosen, reason)
    session.commit()
    return {"reinstated": count}


@router.post("/updates/{update_id}/resend-failed")
def resend_failed(
    update_id: int, data: ResendIn, who: Admin, session: SessionDep
) -> dict[str, int]:
    chosen = selection(update_id, None, data.since, data.until)
    if chosen.since is None or chosen.until is None:
        raise Invalid({"since": "Give both since and until (ISO 8601 with an offset)."})
    requeued = storm.resend_failed(
        session,
        who.id,
        update_id,
        chosen.since,
        chosen.until,
        _reason(data.reason),
        publish_update_batches,
    )
    return {"requeued": requeued}
