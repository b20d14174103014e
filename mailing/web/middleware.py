"""ASGI middleware: a cap on request bodies, security headers, and a request id.

Every answer on a path that holds a token (a link from an email) is `Cache-Control: no-store`,
whatever the route answered: a shared or browser cache must never keep a page reached through
someone's personal link. This middleware is the one place that says so.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailing.metrics import REQUEST_LATENCY
from mailing.subscribers.tokens import LINK_PATHS
from mailing.web.errors import wants_html
from mailing.web.jsonguard import MAX_JSON_DEPTH, json_too_deep

access_log = logging.getLogger("mailing.access")

request_id: ContextVar[str] = ContextVar("request_id", default="-")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


# A JSON escape of a UTF-16 surrogate, or one encoded as UTF-8 bytes (not valid UTF-8, but
# Python's parser decodes bytes with "surrogatepass"): only a body holding one is parsed to
# look for a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def lone_surrogate_at(body: bytes) -> list[str | int] | None:
    """Where the JSON text holds a lone UTF-16 surrogate ("\\ud800"): the path of the first
    string (or key) that does, else None. Python's parser accepts one, but it is not text: it
    cannot be encoded, stored or logged. A valid pair ("\\ud83d\\ude00") is one character."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route says so
    stack: list[tuple[object, list[str | int]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return path
        elif isinstance(value, dict):
            for key, child in value.items():
                if _has_surrogate(key):
                    return [*path, _SURROGATE.sub("", key)]
                stack.append((child, [*path, key]))
        elif isinstance(value, list):
            stack.extend((child, [*path, i]) for i, child in enumerate(value))
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype: bytes = value.split(b";")[0].strip().lower()
            return ctype == b"application/json" or ctype.endswith(b"+json")
    return False


class BodyLimit:
    """Reads at most `limit` bytes of a request body; beyond that answers 413 and stops.

    A JSON body nested deeper than MAX_JSON_DEPTH, or holding a lone UTF-16 surrogate, gets
    422 here, for every route at once.
    """

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger or {}  # paths that take bigger bodies (image uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        await _too_large(scope, receive, send, limit)
                        return
                except ValueError:
                    await _json(send, 400, {"detail": "Invalid Content-Length header."})
                    return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _too_large(scope, receive, send, limit)
                return
            more = message.get("more_body", False)
        if _is_json(scope) and json_too_deep(bytes(body)):
            await _json(send, 422, TOO_DEEP)
            return
        if _is_json(scope) and (where := lone_surrogate_at(bytes(body))) is not None:
            await _json(send, 422, _not_text(where))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _json(send: Send, status: int, payload: dict[str, object]) -> None:
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


TOO_DEEP: dict[str, object] = {
    "detail": [
        {
            "loc": ["body"],
            "msg": f"The JSON is nested too deeply: at most {MAX_JSON_DEPTH} levels.",
            "type": "value_error",
        }
    ]
}


def _not_text(where: list[str | int]) -> dict[str, object]:
    name = ".".join(str(part) for part in where) or "body"
    return {
        "detail": [
            {
                "loc": ["body", *where],
                "msg": f"'{name}' holds a lone UTF-16 surrogate (\\ud800 to \\udfff), "
                "which is not text.",
                "type": "value_error",
            }
        ]
    }


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    message = f"Request body too large: the limit is {limit // 1024} KiB."
    if wants_html(Headers(scope=scope)):  # a browser's form gets a page, as every resident page
        from mailing.web.pages import page

        answer = page(
            "message", status_code=413, title="That was too much to send", message=message
        )
        await answer(scope, receive, send)
        return
    await _json(send, 413, {"detail": message})


def _route_of(scope: Scope) -> str:
    """The route's template (/confirm/{token}), never the raw path: paths carry tokens."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


# The first path segment of every route whose path carries a subscriber's token.
TOKEN_PATHS = tuple(LINK_PATHS.values())
NO_STORE = (b"cache-control", b"no-store")


def holds_token(path: str) -> bool:
    return path.startswith(TOKEN_PATHS)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, production: bool) -> None:
        self.app = app
        self.extra: list[tuple[bytes, bytes]] = [
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            # Tokens live in URLs: never let them leak to another site through Referer.
            (b"referrer-policy", b"no-referrer"),
        ]
        if production:
            self.extra.append(
                (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        private = holds_token(scope.get("path", ""))
        status = 0  # until an answer starts
        # No answer and no error: the client hung up before it could be given one (in the
        # middle of sending its body, say). Logged as nginx does, 499, not as our failure.
        unanswered = 499

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if private:
                    headers = [(k, v) for k, v in headers if k.lower() != NO_STORE[0]]
                    headers.append(NO_STORE)
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.extra if k not in present]
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_headers)
        except BaseException:
            unanswered = 500  # the server answers 500 for what raised
            raise
        finally:
            status = status or unanswered
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            REQUEST_LATENCY.labels(route).observe(elapsed)
            access_log.info(
                "%s %s %s",
                scope["method"],
                route,
                status,
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id.reset(token)
