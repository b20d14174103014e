"""Rendering pages, including the invalid-link page every token route falls back to."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse

from mailing.rendering import render


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return HTMLResponse(render(f"pages/{name}.html", **context), status_code=status_code)


def invalid_link(reason: str = "invalid") -> HTMLResponse:
    """400 for a forged, altered, expired, revoked or misdirected link: say what to do next."""
    return page("invalid_link", status_code=400, reason=reason)
