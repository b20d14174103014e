"""Theme updates: drafts (drafts.py), Markdown rendering (markdown.py) and the email (email.py).

The names most callers need are re-exported here.
"""

from mailing.updates.drafts import (
    MAX_ROW_ID,
    InvalidUpdate,
    NotADraft,
    UpdateNotFound,
    as_json,
    create_draft,
    delete_draft,
    duplicate,
    edit_draft,
    find,
    fingerprint,
    get,
    themes_of,
    validate,
)
from mailing.updates.email import (
    MANAGE,
    UNSUBSCRIBE,
    CannotBuild,
    Preview,
    prepare_update_email,
    prepared_for,
    preview,
    recipient_values,
    send_test,
)
from mailing.updates.markdown import render_html, render_text

__all__ = [
    "MANAGE",
    "MAX_ROW_ID",
    "UNSUBSCRIBE",
    "CannotBuild",
    "InvalidUpdate",
    "NotADraft",
    "Preview",
    "UpdateNotFound",
    "as_json",
    "create_draft",
    "delete_draft",
    "duplicate",
    "edit_draft",
    "find",
    "fingerprint",
    "get",
    "prepare_update_email",
    "prepared_for",
    "preview",
    "recipient_values",
    "render_html",
    "render_text",
    "send_test",
    "themes_of",
    "validate",
]
