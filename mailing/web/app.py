"""The FastAPI application: routers, middleware, static files and error answers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from mailing.config import get_settings, templates_dir
from mailing.web.middleware import BodyLimit, SecurityHeaders
from mailing.web.routes import dev, ops, subscriptions

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    settings = get_settings()
    settings.check()
    app = FastAPI(
        title="Health Inequalities Strategy updates",
        version="1",
        docs_url=None if settings.is_production else "/docs",
        redoc_url=None,
    )
    app.include_router(subscriptions.router)
    app.include_router(ops.router)
    if not settings.is_production:
        app.include_router(dev.router)
    app.mount("/static", StaticFiles(directory=templates_dir() / "static"), name="static")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's shape, without echoing the input back (it may hold an address).
        detail = [
            {"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path.split("/")[1])
        return JSONResponse({"detail": "Something went wrong on our side."}, status_code=500)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders, production=settings.is_production)
    return app
