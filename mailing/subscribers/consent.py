"""The words a person agrees to, versioned, and the append-only consent ledger.

Each event records what was shown (by the SHA-256 of the exact text, kept in consent_text),
when, and how (channel and page). This is our evidence for the ICO and part of the export.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailing.models import ConsentEvent, ConsentText, table_of, utcnow
from mailing.states import ConsentChannel, ConsentEventKind, Frequency

CONSENT_VERSION = "2026-11-v1"
CONSENT_TEXT = (
    "Yes, please email me updates about the Mayor of London's Health Inequalities Strategy "
    "on the themes I have chosen. I can unsubscribe at any time."
)

PRIVACY_NOTICE_VERSION = "2026-11-v1"
PRIVACY_NOTICE_TEXT = (
    "We will use your email address only for the purpose for which you provide it: to send "
    "you updates about the Health Inequalities Strategy on the themes you choose. We will not "
    "add you to any other list unless you ask us to, and we will never pass your details to "
    "third parties. Every email has a link to change your themes, download your data, "
    "unsubscribe, or have your data erased."
)


@dataclass(frozen=True)
class Wording:
    kind: str
    version: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


CONSENT = Wording("consent", CONSENT_VERSION, CONSENT_TEXT)
PRIVACY_NOTICE = Wording("privacy_notice", PRIVACY_NOTICE_VERSION, PRIVACY_NOTICE_TEXT)


# Texts known to be stored, so the sign-up path does not look them up on every request.
_stored: set[str] = set()
CONSENT_EVENT = table_of(ConsentEvent)
_APPEND = sa.insert(CONSENT_EVENT)


def forget_stored_texts() -> None:
    """For tests that empty the tables between runs."""
    _stored.clear()


def _ensure_text(session: Session, wording: Wording) -> str:
    if wording.sha256 in _stored:
        return wording.sha256
    if session.get(ConsentText, wording.sha256) is None:
        try:
            with session.begin_nested():  # two first sign-ups may race to store the text
                session.add(
                    ConsentText(
                        sha256=wording.sha256,
                        kind=wording.kind,
                        version=wording.version,
                        text=wording.text,
                    )
                )
        except IntegrityError:
            pass
    else:
        # Cache only a row already committed: an insert may still be rolled back.
        _stored.add(wording.sha256)
    return wording.sha256


@dataclass(frozen=True)
class Event:
    """One event for the ledger, as `record` takes it."""

    subscriber_id: int
    kind: ConsentEventKind
    channel: ConsentChannel
    themes: list[str]
    source: str | None = None
    with_wording: bool = True
    frequency: Frequency | None = None
    occurred_at: datetime | None = None  # now, unless a caller with its own clock says


def record(
    session: Session,
    subscriber_id: int,
    kind: ConsentEventKind,
    *,
    channel: ConsentChannel,
    themes: list[str],
    source: str | None = None,
    with_wording: bool = True,
    frequency: Frequency | None = None,
) -> None:
    """Append one event to the ledger. Events that give consent carry the wording shown."""
    record_many(
        session, [Event(subscriber_id, kind, channel, themes, source, with_wording, frequency)]
    )


def record_many(session: Session, events: Sequence[Event]) -> None:
    """Append events to the ledger in one statement, in the caller's transaction.

    A Core insert, built once, on the session's connection: the ledger is append-only, so no
    ORM object is needed, and the unit of work's flush cost more than the insert itself."""
    if not events:
        return
    now = utcnow()
    wording: dict[bool, tuple[str | None, str | None]] = {False: (None, None)}
    if any(e.with_wording for e in events):
        wording[True] = (_ensure_text(session, CONSENT), _ensure_text(session, PRIVACY_NOTICE))
    session.connection().execute(
        _APPEND,
        [
            {
                "subscriber_id": e.subscriber_id,
                "kind": e.kind,
                "occurred_at": e.occurred_at or now,
                "channel": e.channel,
                "source": (e.source or None) and e.source[:500],
                "themes": ",".join(e.themes),
                "frequency": e.frequency,
                "consent_text_sha256": wording[e.with_wording][0],
                "privacy_notice_sha256": wording[e.with_wording][1],
            }
            for e in events
        ],
    )


def ledger(session: Session, subscriber_id: int) -> list[dict[str, object]]:
    """The subscriber's events, with the exact texts they were shown, ready to export."""
    events = session.exec(
        select(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber_id)
        .order_by(ConsentEvent.id)  # type: ignore[arg-type]
    ).all()
    texts: dict[str, ConsentText | None] = {}
    out: list[dict[str, object]] = []
    for e in events:
        entry: dict[str, object] = {
            "event": e.kind.value,
            "at": e.occurred_at.isoformat(),
            "channel": e.channel,
            "source": e.source,
            "themes": [t for t in e.themes.split(",") if t],
            "frequency": e.frequency.value if e.frequency else None,
        }
        for field, sha in (
            ("consent", e.consent_text_sha256),
            ("privacy_notice", e.privacy_notice_sha256),
        ):
            if sha:
                if sha not in texts:
                    texts[sha] = session.get(ConsentText, sha)
                t = texts[sha]
                entry[field] = (
                    {"version": t.version, "sha256": sha, "text": t.text} if t else {"sha256": sha}
                )
        out.append(entry)
    return out
