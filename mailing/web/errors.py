"""One place that maps domain errors (mailing/errors.py) to answers: JSON `{"detail"}` in
FastAPI's shape for the API; the console renders its own pages for the errors it expects."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mailing.errors import Invalid, MailingError, TooMany


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
