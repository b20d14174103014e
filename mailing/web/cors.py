"""CORS for JSON sign-ups from the origins in MAILING_ALLOWED_ORIGINS, and for nothing else.

Only POST /subscriptions with a JSON body (and its preflight) gets CORS headers: every other
route, and form posts, answer as if CORS did not exist. No credentials are ever allowed.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from mailing.config import get_settings

PATH = "/subscriptions"


def parse_origins(value: str) -> tuple[str, ...]:
    """'https://a.example, https://b.example/' -> ('https://a.example', 'https://b.example')."""
    return tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())


class SignupCORS:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Built per distinct setting, so a changed MAILING_ALLOWED_ORIGINS applies at once.
        self._by_origins: dict[tuple[str, ...], CORSMiddleware] = {}

    def _cors(self, origins: tuple[str, ...]) -> CORSMiddleware:
        if origins not in self._by_origins:
            self._by_origins[origins] = CORSMiddleware(
                self.app,
                allow_origins=list(origins),
                allow_methods=["POST"],
                allow_headers=["Content-Type", "Accept"],
                allow_credentials=False,
                max_age=600,
            )
        return self._by_origins[origins]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and _json_or_preflight(scope):
            origins = parse_origins(get_settings().allowed_origins)
            if origins:
                await self._cors(origins)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _json_or_preflight(scope: Scope) -> bool:
    if scope["method"] == "OPTIONS":
        return True
    if scope["method"] != "POST":
        return False
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype: bytes = value.split(b";")[0].strip().lower()
            return ctype == b"application/json" or ctype.endswith(b"+json")
    return False
