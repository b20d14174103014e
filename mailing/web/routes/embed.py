"""The embeddable sign-up form for the strategy's own page, shown as text to copy."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from markupsafe import Markup, escape

from mailing.rendering import render
from mailing.subscribers import consent
from mailing.web.pages import page

router = APIRouter(prefix="/embed", include_in_schema=False)

DEFAULT_SOURCE = "strategy-page-snippet"


def signup_snippet(source: str = DEFAULT_SOURCE) -> str:
    """Plain HTML posting to {MAILING_BASE_URL}/subscriptions, with the exact consent wording."""
    return render(
        "snippet.html",
        consent_text=_readable(consent.CONSENT_TEXT),
        privacy_notice=_readable(consent.PRIVACY_NOTICE_TEXT),
        source=source,
    )


@router.get("/signup-snippet")
def snippet_page() -> Response:
    return page("embed_snippet", snippet=signup_snippet())


@router.get("/signup-snippet.txt")
def snippet_text() -> Response:
    return PlainTextResponse(signup_snippet())


def _readable(text: str) -> Markup:
    """Escaped for element content, but with quotes left as typed: staff read what they paste."""
    # Safe: the text was escaped just above; only quotes, harmless in element content, go back.
    return Markup(str(escape(text)).replace("&#39;", "'").replace("&#34;", '"'))  # noqa: S704
