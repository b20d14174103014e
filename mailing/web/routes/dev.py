"""/dev/outbox: the mail captured by `mailing dev`, links clickable. Never in production."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from mailing.mail import devcapture
from mailing.web.pages import page

router = APIRouter(prefix="/dev", include_in_schema=False)

# The HTML part as the recipient's mail program shows it: its inline styles apply, nothing else
# runs or loads from elsewhere, and `sandbox` gives it an opaque origin (no cookies, no script,
# no forms), so a captured email can never act as this site. Its links still open.
EMAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation"
)


def _capture() -> devcapture.Capture:
    capture = devcapture.active
    if capture is None:
        raise HTTPException(404, "The mail capture runs only under `mailing dev`.")
    return capture


@router.get("/outbox")
def outbox() -> HTMLResponse:
    messages = list(reversed(_capture().outbox.messages()))
    headers = {m.number: [(k, str(v)) for k, v in m.message.items()] for m in messages}
    return page("outbox", messages=messages, headers=headers)


@router.get("/outbox/{number}/html")
def outbox_html(number: int) -> HTMLResponse:
    found = [m for m in _capture().outbox.messages() if m.number == number]
    html = found[0].part("html") if found else ""
    if not html:
        raise HTTPException(404, "No captured email with that number has an HTML part.")
    return HTMLResponse(
        html,
        headers={"Content-Security-Policy": EMAIL_CSP, "Cache-Control": "no-store"},
    )
