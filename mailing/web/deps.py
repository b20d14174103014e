"""Typed dependencies shared by the routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from mailing.config import Settings, get_settings
from mailing.db import get_engine
from mailing.ratelimit import get_limiter

IP_WINDOW_SECONDS = 60


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limit_public_post(request: Request) -> None:
    """MAILING_RATE_LIMIT_PER_IP public POSTs per client IP per minute, then 429."""
    settings = get_settings()
    verdict = get_limiter().hit(
        f"ip:{client_ip(request)}", settings.rate_limit_per_ip, IP_WINDOW_SECONDS
    )
    if not verdict.allowed:
        from mailing.metrics import RATE_LIMITED

        RATE_LIMITED.inc()
        raise HTTPException(
            status_code=429,
            detail="Too many requests from your network. Please wait a minute and try again.",
            headers={"Retry-After": str(verdict.retry_after)},
        )


PublicPostLimit = Depends(limit_public_post)


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    ctype = request.headers.get("content-type", "")
    return "application/json" in accept or ctype.startswith("application/json")
