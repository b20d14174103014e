"""The update email: built once per update with placeholders, personalised per recipient.

Per-recipient values (the address and two signed links) go only where the template puts them:
the placeholders carry a random per-process marker (mailing/mail/builder.py), so no text written by
staff can produce one. Test copies go only to staff addresses and are audited with the recipient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from mailing.config import get_settings
from mailing.errors import Invalid
from mailing.mail import pipeline
from mailing.mail.builder import (
    MANAGE,
    TO,
    UNSUBSCRIBE,
    HeaderInjection,
    Prepared,
    check_header,
    list_headers,
    list_urls,
    prepare,
    recipient_values,
)
from mailing.models import Update
from mailing.rendering import render
from mailing.staff.audit import AuditAction, audit
from mailing.subscribers.tokens import LINK_PATHS, Purpose
from mailing.themes import stored_themes, theme_titles
from mailing.updates.markdown import render_html, render_text

__all__ = ["MANAGE", "TO", "UNSUBSCRIBE", "recipient_values"]  # the list email's placeholders
TEST_MARK = "[TEST] "


class CannotBuild(Invalid):
    """The email builder refused this update's text; `errors` names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__({field: message})


@dataclass(frozen=True)
class Preview:
    subject: str
    html: str
    text: str


def _context(
    update: Update, unsubscribe_url: str, preferences_url: str, test: bool
) -> dict[str, Any]:
    return {
        "body_html": render_html(update.body),
        "body_text": render_text(update.body),
        "themes": theme_titles(stored_themes(update.themes)),
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": preferences_url,
        "test": test,
        "archive_url": f"{get_settings().base_url}/updates/{update.id}"
        if update.published
        else None,
    }


def subject_of(update: Update, *, test: bool = False) -> str:
    return (TEST_MARK if test else "") + update.subject


def preview(update: Update) -> Preview:
    """The email as a subscriber would see it, with example links that lead nowhere."""
    base = get_settings().base_url
    unsubscribe, manage = (
        f"{base}{LINK_PATHS[p]}example" for p in (Purpose.UNSUBSCRIBE, Purpose.MANAGE)
    )
    context = _context(update, unsubscribe, manage, False)
    subject = subject_of(update)
    return Preview(
        subject=subject,
        html=render("emails/update.html", subject=subject, **context),
        text=render("emails/update.txt", subject=subject, **context),
    )


def prepare_update_email(update: Update, *, test: bool = False) -> Prepared:
    """Build the update's message once, with placeholders for the address and both link tokens.

    Each copy is then `prepared.personalise(recipient_values(...))`: a join of byte strings.
    Raises CannotBuild if the builder refuses the text.
    """
    _check_subject(subject_of(update, test=test))
    unsubscribe_url, preferences_url = list_urls()
    try:
        return prepare(
            "update",
            subject=subject_of(update, test=test),
            context=_context(update, unsubscribe_url, preferences_url, test),
            headers=list_headers(unsubscribe_url),
        )
    except HeaderInjection as exc:
        raise CannotBuild("subject", "A subject must be one line of text.") from exc
    except (ValueError, TypeError, UnicodeError) as exc:
        raise CannotBuild("body", f"This cannot be sent by email ({type(exc).__name__}).") from exc


def _check_subject(subject: str) -> None:
    """The subject alone through the header machinery, so a refusal names the right field."""
    try:
        check_header(subject)
    except (ValueError, TypeError, UnicodeError) as exc:
        raise CannotBuild("subject", "A subject must be one line of plain text.") from exc


# Built once per update in each worker process; an edit changes updated_at, so a new version.
_CACHE: dict[tuple[int, str, str], Prepared] = {}


def prepared_for(update: Update) -> Prepared:
    """The update's Prepared message, built once per worker process (per update and version)."""
    assert update.id is not None
    version = update.updated_at.isoformat() if update.updated_at else ""
    key = (update.id, version, get_settings().base_url)
    found = _CACHE.get(key)
    if found is None:
        if len(_CACHE) >= 8:
            _CACHE.clear()
        found = _CACHE[key] = prepare_update_email(update)
    return found


def send_test(session: Session, staff_id: int | None, update: Update, to: str) -> None:
    """Send one copy marked as a test to `to` now (audited with the recipient, not a delivery).

    The caller has checked that `to` is a staff address and that the sender is within the test
    limit. Its links lead to the "link not valid" page: a test copy belongs to no subscriber.
    Raises CannotBuild, or relay.TransientFailure / PermanentFailure when the relay will not
    take it.
    """
    prepared = prepare_update_email(update, test=True)
    raw = prepared.personalise(recipient_values(to, "test-copy", "test-copy"))
    pipeline.send_now(pipeline.Copy(prepared.envelope_from, to, raw))
    audit(session, staff_id, AuditAction.TEST_SENT, update.id, f"to {to}")
