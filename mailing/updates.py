"""Theme updates: drafting and editing, safe Markdown rendering, preview, and the email itself.

Markdown is rendered with raw HTML switched off, so everything a writer types is escaped; links
survive only for http, https and mailto. The HTML part carries inline styles (mail clients drop
style sheets) and the plain-text part says the same in text.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup
from sqlmodel import Session

from mailing import staff as staff_audit
from mailing.config import get_settings
from mailing.emails import TO, Prepared, placeholder, prepare
from mailing.mailer import Mailer
from mailing.models import Update, utcnow
from mailing.rendering import render
from mailing.states import UpdateStatus
from mailing.themes import THEMES, UnknownTheme, normalise_themes, theme_titles

MAX_ROW_ID = 2**31 - 1  # ids are 32-bit integer columns
MAX_SUBJECT = 200
MAX_BODY_BYTES = 100 * 1024
UNSUBSCRIBE = "UNSUBSCRIBE"
MANAGE = "MANAGE"
TEST_MARK = "[TEST] "
SAFE_SCHEMES = ("http:", "https:", "mailto:")


def find(session: Session, update_id: int, *, refresh: bool = False) -> Update | None:
    """The update with this id, or None. An id outside the column's range is simply unknown
    (given to the database, it would raise instead of missing)."""
    if not 0 < update_id <= MAX_ROW_ID:
        return None
    return session.get(Update, update_id, populate_existing=refresh)


class InvalidUpdate(ValueError):
    """Bad subject, body or themes; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class NotADraft(Exception):
    """Only a draft can be edited or sent."""


# --- Validation and drafts -------------------------------------------------------------------


def validate(subject: object, body: object, themes: object) -> tuple[str, str, list[str]]:
    """Check an update's fields; returns them cleaned or raises InvalidUpdate."""
    errors: dict[str, str] = {}
    clean_subject = subject.strip() if isinstance(subject, str) else ""
    if not isinstance(subject, str) or not clean_subject:
        errors["subject"] = "Enter a subject."
    elif len(clean_subject) > MAX_SUBJECT:
        errors["subject"] = f"A subject can have at most {MAX_SUBJECT} characters."
    elif any(c in clean_subject for c in "\r\n\x00"):
        errors["subject"] = "A subject must be on one line."
    clean_body = body if isinstance(body, str) else ""
    if not isinstance(body, str) or not body.strip():
        errors["body"] = "Enter the text of the update."
    elif len(body.encode()) > MAX_BODY_BYTES:
        errors["body"] = f"The text can be at most {MAX_BODY_BYTES // 1024} KB."
    elif "\x00" in body:
        errors["body"] = "The text holds a character that cannot be sent."
    chosen: list[str] = []
    if not isinstance(themes, list) or not all(isinstance(t, str) for t in themes) or not themes:
        errors["themes"] = "Choose at least one theme."
    else:
        try:
            chosen = normalise_themes(themes, empty_means_all=False)
        except UnknownTheme as exc:
            errors["themes"] = str(exc)
    if errors:
        raise InvalidUpdate(errors)
    return clean_subject, clean_body.replace("\r\n", "\n"), chosen


def themes_of(update: Update) -> list[str]:
    return [t for t in update.themes.split(",") if t in THEMES]


def create_draft(
    session: Session, staff_id: int | None, subject: object, body: object, themes: object
) -> Update:
    """Validate and store a new draft (audited as `drafted`); the caller commits."""
    clean_subject, clean_body, chosen = validate(subject, body, themes)
    update = Update(
        subject=clean_subject, body=clean_body, themes=",".join(chosen), created_by=staff_id
    )
    session.add(update)
    session.flush()
    staff_audit.audit(session, staff_id, "drafted", update.id)
    return update


def edit_draft(
    session: Session,
    staff_id: int | None,
    update: Update,
    *,
    subject: object = None,
    body: object = None,
    themes: object = None,
) -> Update:
    """Change a draft's fields (None leaves a field as it is; audited as `edited`).

    Raises NotADraft once sending has begun, InvalidUpdate for bad values. The caller commits.
    """
    if update.status != UpdateStatus.DRAFT:
        raise NotADraft(f"update {update.id} is {update.status.value}")
    clean_subject, clean_body, chosen = validate(
        update.subject if subject is None else subject,
        update.body if body is None else body,
        themes_of(update) if themes is None else themes,
    )
    update.subject, update.body, update.themes = clean_subject, clean_body, ",".join(chosen)
    update.updated_at = utcnow()
    session.add(update)
    session.flush()
    staff_audit.audit(session, staff_id, "edited", update.id)
    return update


def as_json(update: Update) -> dict[str, Any]:
    """What the staff API shows of an update: no subscriber data."""
    return {
        "id": update.id,
        "status": update.status.value,
        "subject": update.subject,
        "body": update.body,
        "themes": themes_of(update),
        "recipients": update.recipients,
        "sent": update.sent,
        "failed": update.failed,
        "pending": max(0, update.recipients - update.sent - update.failed)
        if update.status != UpdateStatus.DRAFT
        else 0,
        "created_at": update.created_at.isoformat() if update.created_at else None,
        "send_started_at": update.send_started_at.isoformat() if update.send_started_at else None,
        "sent_at": update.sent_at.isoformat() if update.sent_at else None,
    }


# --- Markdown ----------------------------------------------------------------------------------


def _safe_link(url: str) -> bool:
    lowered = re.sub(r"[\x00-\x20]", "", url).lower()
    return lowered.startswith(SAFE_SCHEMES)


@lru_cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    # Remote images would track who opens the email: an image is shown as its text.
    md.disable("image")
    md.validateLink = _safe_link  # type: ignore[method-assign]
    return md


STYLES: dict[str, str] = {
    "h1": "font-size:24px;line-height:1.25;margin:0 0 16px;",
    "h2": "font-size:20px;line-height:1.3;margin:24px 0 12px;",
    "h3": "font-size:18px;line-height:1.3;margin:20px 0 8px;",
    "h4": "font-size:16px;margin:16px 0 8px;",
    "h5": "font-size:16px;margin:16px 0 8px;",
    "h6": "font-size:16px;margin:16px 0 8px;",
    "p": "margin:0 0 16px;",
    "ul": "margin:0 0 16px;padding-left:24px;",
    "ol": "margin:0 0 16px;padding-left:24px;",
    "li": "margin:0 0 4px;",
    "a": "color:#1d4f91;text-decoration:underline;",
    "blockquote": "margin:0 0 16px;padding:0 0 0 12px;border-left:4px solid #b1b4b6;color:#484949;",
    "pre": "margin:0 0 16px;padding:12px;background:#f3f2f1;white-space:pre-wrap;",
    "code": "font-family:Consolas,Menlo,monospace;font-size:14px;",
    "hr": "border:0;border-top:1px solid #b1b4b6;margin:24px 0;",
}
_OPEN_TAG = re.compile(r"<(" + "|".join(STYLES) + r")(?=[\s>/])")


def render_html(body: str) -> Markup:
    """The body as HTML with inline styles; no HTML from the writer gets through."""
    html = _markdown().render(body)
    # markdown-it escaped everything the writer typed; only our own style attributes are added.
    styled = _OPEN_TAG.sub(lambda m: f'<{m.group(1)} style="{STYLES[m.group(1)]}"', html)
    return Markup(styled)  # noqa: S704


def render_text(body: str, width: int = 72) -> str:
    """The body as plain text: headings underlined, lists dashed, links as `text (url)`."""
    out: list[str] = []
    prefix: list[str] = []  # one entry per open blockquote / list item
    bullets: list[int | None] = []  # per open list: next number, or None for bullets
    pending_item = ""
    tokens = _markdown().parse(body)
    heading_level = 0
    for tok in tokens:
        kind = tok.type
        if kind == "heading_open":
            heading_level = int(tok.tag[1])
        elif kind == "heading_close":
            heading_level = 0
        elif kind == "bullet_list_open":
            bullets.append(None)
        elif kind == "ordered_list_open":
            bullets.append(int(str(tok.attrs.get("start", 1))))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            bullets.pop()
            out.append("")
        elif kind == "list_item_open":
            number = bullets[-1] if bullets else None
            if number is None:
                pending_item = "- "
            else:
                pending_item = f"{number}. "
                bullets[-1] = number + 1
        elif kind == "blockquote_open":
            prefix.append("> ")
        elif kind == "blockquote_close":
            prefix.pop()
        elif kind == "hr":
            out.extend(["-" * 20, ""])
        elif kind in ("fence", "code_block"):
            lead = "".join(prefix)
            out.extend(lead + "    " + line for line in tok.content.rstrip("\n").split("\n"))
            out.append("")
        elif kind == "inline":
            text = _inline_text(tok.children or [])
            lead = "".join(prefix)
            indent = "  " * max(0, len(bullets) - 1)
            if heading_level:
                out.append(lead + text)
                out.append(lead + ("=" if heading_level == 1 else "-") * min(len(text), width))
                out.append("")
                continue
            first = lead + indent + pending_item
            rest = lead + indent + " " * len(pending_item)
            pending_item = ""
            for i, para_line in enumerate(text.split("\n")):
                out.extend(
                    textwrap.wrap(
                        para_line,
                        width,
                        initial_indent=first if i == 0 else rest,
                        subsequent_indent=rest,
                        break_long_words=False,
                        break_on_hyphens=False,
                    )
                    or [first.rstrip()]
                )
            if not bullets:
                out.append("")
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n"


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    href: str | None = None
    link_text: list[str] = []
    for child in children:
        target = link_text if href is not None else parts
        if child.type in ("text", "code_inline"):
            target.append(child.content)
        elif child.type == "softbreak":
            target.append(" ")
        elif child.type == "hardbreak":
            target.append("\n")
        elif child.type == "link_open":
            href = str(child.attrs.get("href", ""))
            link_text = []
        elif child.type == "link_close":
            label = "".join(link_text)
            shown = href.removeprefix("mailto:") if href else ""
            parts.append(label if label == shown else f"{label} ({shown})")
            href = None
    return "".join(parts)


# --- The email -------------------------------------------------------------------------------


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
        "themes": theme_titles(themes_of(update)),
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
    context = _context(update, f"{base}/unsubscribe/example", f"{base}/preferences/example", False)
    subject = subject_of(update)
    return Preview(
        subject=subject,
        html=render("emails/update.html", subject=subject, **context),
        text=render("emails/update.txt", subject=subject, **context),
    )


def prepare_update_email(update: Update, *, test: bool = False) -> Prepared:
    """Build the update's message once, with placeholders for the address and both link tokens.

    Each copy is then `prepared.personalise(recipient_values(...))`: a join of byte strings.
    """
    base = get_settings().base_url
    unsubscribe_url = f"{base}/unsubscribe/{placeholder(UNSUBSCRIBE)}"
    preferences_url = f"{base}/preferences/{placeholder(MANAGE)}"
    return prepare(
        "update",
        subject=subject_of(update, test=test),
        context=_context(update, unsubscribe_url, preferences_url, test),
        headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": get_settings().list_id,
        },
    )


def recipient_values(email: str, unsubscribe_token: str, manage_token: str) -> dict[str, str]:
    return {TO: email, UNSUBSCRIBE: unsubscribe_token, MANAGE: manage_token}


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
    """Send one copy marked as a test to `to` now (audited as `test-sent`, not a delivery).

    Its links lead to the "link not valid" page: a test copy belongs to no subscriber. Raises
    mailer.TransientFailure / PermanentFailure when the relay will not take it.
    """
    prepared = prepare_update_email(update, test=True)
    raw = prepared.personalise(recipient_values(to, "test-copy", "test-copy"))
    with Mailer() as mailer:
        mailer.send(prepared.envelope_from, to, raw)
    staff_audit.audit(session, staff_id, "test-sent", update.id)
