"""Operations: liveness, readiness (database and broker), and Prometheus metrics.

/metrics needs `Authorization: Bearer {MAILING_METRICS_TOKEN}` when that is set (else 401); unset,
it is open in dev and not there at all (404) in production: figures about subscribers are never
public.
"""

from __future__ import annotations

import hmac

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailing.config import get_settings
from mailing.db import get_engine
from mailing.metrics import REGISTRY
from mailing.web.deps import bearer_token

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database() -> bool:
    try:
        with get_engine().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:  # any failure means not ready
        return False


def _check_broker() -> bool:
    from workers.celery_app import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:  # any failure means not ready
        return False


@router.get("/readyz")
async def readyz() -> JSONResponse:
    database = await run_in_threadpool(_check_database)
    broker = await run_in_threadpool(_check_broker)
    ready = database and broker
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "database": database, "broker": broker},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", responses={200: {}, 401: {}, 404: {}})
def metrics(request: Request) -> Response:
    settings = get_settings()
    expected = settings.metrics_token
    if not expected:
        if settings.is_production:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
    elif not _same(bearer_token(request), expected):
        return JSONResponse(
            {"detail": "/metrics needs its bearer token (MAILING_METRICS_TOKEN)."},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _same(given: str | None, expected: str) -> bool:
    # Constant time: the answer's timing must not tell how much of a guess was right.
    return hmac.compare_digest((given or "").encode(), expected.encode())
