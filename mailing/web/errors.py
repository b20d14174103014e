"""One place that maps domain errors (mailing/errors.py) to answers: JSON `{"detail"}` in
FastAPI's shape for the API; the console renders its own pages for the errors it expects.

A browser (a page asking for HTML, or a form post) that is over the per-IP limit or asks for a
page that does not exist gets the site's own page, as every resident page answers; a JSON
client keeps FastAPI's JSON.

The subscriber's links are answered here too, once for every route: an InvalidLink is the 400
page naming its LinkProblem (JSON `{"detail"}` when the caller wants JSON), and NotActive on the
preferences form is the 409 page that says why."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailing.errors import Invalid, InvalidLink, MailingError, NotActive, TooMany
from mailing.web.deps import wants_json
from mailing.web.pages import invalid_link, page

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def detail_of(exc: MailingError) -> object:
    if isinstance(exc, Invalid):
        return [
            {"loc": ["body", field], "msg": message, "type": "value_error"}
            for field, message in exc.errors.items()
        ]
    return exc.message


def register_errors(app: FastAPI) -> None:
    @app.exception_handler(MailingError)
    async def _domain(request: Request, exc: MailingError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooMany) else None
        return JSONResponse(
            {"detail": detail_of(exc)}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(InvalidLink)
    async def _invalid_link(request: Request, exc: InvalidLink) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=exc.status_code)
        return invalid_link(exc.problem)

    @app.exception_handler(NotActive)
    async def _not_active(request: Request, exc: NotActive) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=exc.status_code)
        # Raised only on a preferences link's own page: "back" is the page itself.
        return page(
            "not_active",
            status_code=exc.status_code,
            status=exc.status.value,
            preferences_url=request.url.path,
        )


def wants_html(headers: Mapping[str, str]) -> bool:
    """A browser: it asks for HTML, or posts a form, and does not ask for JSON."""
    accept = headers.get("accept", "")
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if "application/json" in accept or ctype == "application/json":
        return False
    return "text/html" in accept or ctype in FORM_TYPES


def _wait(seconds: int) -> str:
    if seconds <= 60:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    minutes = -(-seconds // 60)
    return f"{minutes} minutes"


def register_pages(app: FastAPI) -> None:
    """HTML for browsers on the HTTP errors a resident can meet: 404 and the per-IP 429."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code not in (404, 429) or not wants_html(request.headers):
            return await http_exception_handler(request, exc)
        if exc.status_code == 404:
            return page("not_found", status_code=404)
        retry_after = (exc.headers or {}).get("Retry-After", "60")
        wait = int(retry_after) if retry_after.isdigit() else 60
        answer = page("too_many", status_code=429, wait=_wait(wait))
        answer.headers["Retry-After"] = str(wait)
        return answer
