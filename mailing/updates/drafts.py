"""Drafting theme updates: validation (exactly what the email builder accepts), drafts and
edits, and the fingerprint a send confirmation pins.

Only a draft can be changed; a scheduled update must be unscheduled first. A sender confirms a
send of exactly the text they were shown: the confirmation carries `fingerprint(update)` and the
send is refused if it no longer matches.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any

from sqlmodel import Session

from mailing.errors import Conflict, Invalid, NotFound
from mailing.models import Update, utcnow
from mailing.staff.audit import AuditAction, audit
from mailing.states import EDITABLE_UPDATE
from mailing.themes import UnknownTheme, normalise_themes, stored_themes
from mailing.updates.images import stored_at
from mailing.updates.markdown import image_problems

MAX_ROW_ID = 2**31 - 1  # ids are 32-bit integer columns
MAX_SUBJECT = 200
MAX_BODY_BYTES = 100 * 1024
# Characters a subject header cannot carry (controls, line and paragraph separators, NEL), and
# invisible format characters (category Cf: bidirectional overrides and isolates, zero-width
# spaces and joiners): a subject must read to the reviewer exactly as it reads in an inbox.
_SUBJECT_REFUSED = {"Cc", "Cf", "Cs", "Zl", "Zp"}
# In the body, tabs and line breaks are text; every other control character is refused.
_BODY_ALLOWED_CONTROLS = {"\t", "\n", "\r"}
# The body keeps other format characters (an emoji's zero-width joiner, a right-to-left mark)
# but not the embeddings, overrides and isolates that make text display in another order.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def find(session: Session, update_id: int, *, refresh: bool = False) -> Update | None:
    """The update with this id, or None. An id outside the column's range is simply unknown
    (given to the database, it would raise instead of missing)."""
    if not 0 < update_id <= MAX_ROW_ID:
        return None
    return session.get(Update, update_id, populate_existing=refresh)


class UpdateNotFound(NotFound):
    def __init__(self, update_id: int) -> None:
        super().__init__("No update with this id.")
        self.update_id = update_id


def get(session: Session, update_id: int, *, lock: bool = False) -> Update:
    """The update with this id (locked for this transaction if asked), or UpdateNotFound."""
    if not 0 < update_id <= MAX_ROW_ID:
        raise UpdateNotFound(update_id)
    found = session.get(Update, update_id, with_for_update=lock, populate_existing=lock)
    if found is None:
        raise UpdateNotFound(update_id)
    return found


class InvalidUpdate(Invalid):
    """Bad subject, body or themes; `errors` maps each field to what is wrong with it."""


class NotADraft(Conflict):
    """Only a draft can be edited."""

    def __init__(self, update: Update) -> None:
        super().__init__(
            f"Only a draft can be changed; this update is {update.status.value}"
            + (" (unschedule it first)." if update.send_at else ".")
        )


def fingerprint(update: Update) -> str:
    """What a sender reviewed: a digest of the subject, body, themes and whether it is published
    in the public archive (an editor must not make an internal update public after review)."""
    published = "published" if update.published else "internal"
    text = "\x1f".join((update.subject, update.body, update.themes, published))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _refused_in_subject(subject: str) -> str | None:
    """The first character a subject may not hold, or None."""
    return next((c for c in subject if unicodedata.category(c) in _SUBJECT_REFUSED), None)


def _refused_in_body(body: str) -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in _BODY_ALLOWED_CONTROLS for c in body)


def _bidi_control_in(body: str) -> str | None:
    return next((c for c in body if c in _BIDI_CONTROLS), None)


def _code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


def validate(subject: object, body: object, themes: object) -> tuple[str, str, list[str]]:
    """Check an update's fields; returns them cleaned or raises InvalidUpdate."""
    errors: dict[str, str] = {}
    clean_subject = subject.strip() if isinstance(subject, str) else ""
    if not isinstance(subject, str) or not clean_subject:
        errors["subject"] = "Enter a subject."
    elif len(clean_subject) > MAX_SUBJECT:
        errors["subject"] = f"A subject can have at most {MAX_SUBJECT} characters."
    elif (refused := _refused_in_subject(clean_subject)) is not None:
        errors["subject"] = (
            "A subject must be one line of visible text, without control characters, line "
            f"separators or invisible formatting characters (it holds {_code_point(refused)})."
        )
    clean_body = body if isinstance(body, str) else ""
    if not isinstance(body, str) or not body.strip():
        errors["body"] = "Enter the text of the update."
    elif len(body.encode()) > MAX_BODY_BYTES:
        errors["body"] = f"The text can be at most {MAX_BODY_BYTES // 1024} KB."
    elif _refused_in_body(body):
        errors["body"] = "The text holds a control character that cannot be sent by email."
    elif (bidi := _bidi_control_in(body)) is not None:
        errors["body"] = (
            "The text holds a character that changes the direction text is shown in "
            f"({_code_point(bidi)}), so it could read differently from how it looks."
        )
    chosen: list[str] = []
    if not isinstance(themes, list) or not all(isinstance(t, str) for t in themes) or not themes:
        errors["themes"] = "Choose at least one theme."
    else:
        try:
            chosen = normalise_themes(themes, empty_means_all=False)
        except UnknownTheme as exc:
            errors["themes"] = str(exc)
    if "body" not in errors and (problems := image_problems(clean_body)[0]):
        errors["body"] = " ".join(problems)
    if errors:
        raise InvalidUpdate(errors)
    clean_body = clean_body.replace("\r\n", "\n")
    _check_buildable(clean_subject, clean_body, chosen)
    return clean_subject, clean_body, chosen


def _check_buildable(subject: str, body: str, themes: list[str]) -> None:
    """Build the email once, as a send would: a draft the builder refuses is refused now (422),
    never discovered by a send that can then only fail."""
    from mailing.updates.email import CannotBuild, prepare_update_email

    try:
        prepare_update_email(Update(subject=subject, body=body, themes=",".join(themes)))
    except CannotBuild as exc:
        raise InvalidUpdate(exc.errors) from exc


def _check_images_exist(session: Session, body: str) -> None:
    missing = [p for p in image_problems(body)[1] if stored_at(session, p) is None]
    if missing:
        raise InvalidUpdate(
            {"body": f"No uploaded image has the address {missing[0]}: upload it first."}
        )


def themes_of(update: Update) -> list[str]:
    return stored_themes(update.themes)


def create_draft(
    session: Session, staff_id: int | None, subject: object, body: object, themes: object
) -> Update:
    """Validate and store a new draft (audited as `drafted`); the caller commits."""
    clean_subject, clean_body, chosen = validate(subject, body, themes)
    _check_images_exist(session, clean_body)
    update = Update(
        subject=clean_subject, body=clean_body, themes=",".join(chosen), created_by=staff_id
    )
    session.add(update)
    session.flush()
    audit(session, staff_id, AuditAction.DRAFTED, update.id)
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
    if update.status not in EDITABLE_UPDATE:
        raise NotADraft(update)
    clean_subject, clean_body, chosen = validate(
        update.subject if subject is None else subject,
        update.body if body is None else body,
        themes_of(update) if themes is None else themes,
    )
    _check_images_exist(session, clean_body)
    update.subject, update.body, update.themes = clean_subject, clean_body, ",".join(chosen)
    update.updated_at = utcnow()
    session.add(update)
    session.flush()
    audit(session, staff_id, AuditAction.EDITED, update.id)
    return update


def duplicate(session: Session, staff_id: int | None, source: Update) -> Update:
    """A new draft with the text, themes and archive choice of any update (audited as
    `duplicated`, naming the source); InvalidUpdate if that text no longer passes. The caller
    commits."""
    copy = create_draft(session, staff_id, source.subject, source.body, themes_of(source))
    copy.published = source.published
    audit(session, staff_id, AuditAction.DUPLICATED, copy.id, f"copy of update #{source.id}")
    return copy


def delete_draft(session: Session, staff_id: int | None, update: Update) -> None:
    """Delete a draft (NotADraft for anything else: what was sent or scheduled stays on
    record). The audit row keeps its id and subject, since the update itself is gone. The
    caller commits."""
    if update.status not in EDITABLE_UPDATE:
        raise NotADraft(update)
    audit(session, staff_id, AuditAction.DRAFT_DELETED, None, f"#{update.id}: {update.subject}")
    session.delete(update)
    session.flush()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def as_json(update: Update) -> dict[str, Any]:
    """What the staff API shows of an update (the live counts come from sending.progress)."""
    return {
        "id": update.id,
        "status": update.status.value,
        "subject": update.subject,
        "body": update.body,
        "themes": themes_of(update),
        "fingerprint": fingerprint(update),
        "send_at": _iso(update.send_at),
        "error": update.error,
        "created_at": _iso(update.created_at),
        "send_started_at": _iso(update.send_started_at),
        "sent_at": _iso(update.sent_at),
    }
