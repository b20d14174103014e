"""Rendering pages, including the invalid-link page every token route falls back to."""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse

from mailing.errors import LinkProblem
from mailing.rendering import render


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return HTMLResponse(render(f"pages/{name}.html", **context), status_code=status_code)


def invalid_link(problem: LinkProblem = LinkProblem.INVALID) -> HTMLResponse:
    """400 for a forged, altered, expired, used, revoked or misdirected link: say what to do
    next (mailing/web/errors.py answers every InvalidLink with it)."""
    return page("invalid_link", status_code=400, reason=problem.value)
