"""Typed dependencies shared by the routes, and the one place that decides who the client is.

The client IP (the per-IP rate limit's key) is the socket's peer, unless that peer is a proxy
named in MAILING_TRUSTED_PROXIES: then it is the right-most X-Forwarded-For hop that is not a
trusted proxy. Hops to the left of it were written by the client and are never believed, and
`mailing serve` never lets uvicorn rewrite the peer from those headers itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from mailing.config import Settings, get_settings
from mailing.db import get_engine
from mailing.ratelimit import client_bucket, get_limiter

IP_WINDOW_SECONDS = 60

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def client_ip(request: Request) -> str:
    peer = request.client.host if request.client else "unknown"
    networks = get_settings().trusted_proxy_networks
    if not networks:
        return peer
    hops = [h for v in request.headers.getlist("x-forwarded-for") for h in v.split(",")]
    return _right_most_untrusted(peer, hops, networks)


def _right_most_untrusted(peer: str, hops: list[str], networks: tuple[Network, ...]) -> str:
    nearest = _address(peer)
    if nearest is None or not _trusted(nearest, networks):
        return peer
    for hop in reversed(hops):
        address = _address(hop.strip())
        if address is None:
            # Garbage from a client cannot name a bucket of its own: the proxy that passed it on
            # stays the client, so rotating made-up values gains nothing.
            break
        nearest = address
        if not _trusted(address, networks):
            break
    return str(nearest)


def _address(text: str) -> Address | None:
    """An IP from a header hop: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`."""
    port = ""
    if text.startswith("["):
        text, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
    if (port and not port.isdigit()) or "%" in text:  # a scope id would name a bucket of its own
        return None
    try:
        return ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer …` header, if there is one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def limit_public_post(request: Request) -> None:
    """MAILING_RATE_LIMIT_PER_IP public POSTs per client IP (an IPv6 client's /64) per minute,
    then 429."""
    settings = get_settings()
    verdict = await get_limiter().hit_async(
        f"ip:{client_bucket(client_ip(request))}", settings.rate_limit_per_ip, IP_WINDOW_SECONDS
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
