"""/dev/outbox: the mail captured by `mailing dev`, links clickable. Never in production."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from mailing.mail import devcapture
from mailing.web.pages import page

router = APIRouter(prefix="/dev", include_in_schema=False)


@router.get("/outbox")
def outbox() -> HTMLResponse:
    capture = devcapture.active
    if capture is None:
        raise HTTPException(404, "The mail capture runs only under `mailing dev`.")
    return page("outbox", messages=list(reversed(capture.outbox.messages())))
