"""One place that maps domain errors (mailing/errors.py) to answers: JSON `{"detail"}` in
FastAPI's shape for the API; the console renders its own pages for the errors it expects.

The subscriber's links are answered here too, once for every route: an InvalidLink is the 400
page naming its LinkProblem (JSON `{"detail"}` when the caller wants JSON), and NotActive on the
preferences form is the 409 page that says why."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mailing.errors import Invalid, InvalidLink, MailingError, NotActive, TooMany
from mailing.web.deps import wants_json
from mailing.web.pages import invalid_link, page


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
