"""Bringing an existing list in (`mailing import FILE --source TEXT`): consent is evidence or it
is asked for again, never assumed.

A row with `consented_at` becomes an active subscriber with a ledger event of channel `import`
recording the source, when the person consented and the hash of the wording they agreed to (the
wording given, or a text saying plainly that it is unknown). A row without it becomes a pending
sign-up sent one re-permission email (a confirmation link saying why), and is purged with the
other unconfirmed sign-ups if they never confirm. An address on the suppression list (a keyed
hash, or a subscriber who left or bounced) is skipped and never mailed; a subscriber already
here is left as they are. So running a file twice changes nothing and mails no one twice.

The file is read twice, streaming: once to refuse a file that cannot be imported before anything
changes, then in chunks of CHUNK rows, each chunk one transaction (a dry run keeps the one
transaction open and rolls it back, so it counts exactly what a real run would). No cell is
ever echoed back: an invalid line is reported by its number and what was wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from mailing.config import get_settings
from mailing.mail import outbox
from mailing.models import (
    ConsentText,
    Subscriber,
    SubscriberTheme,
    Suppression,
    table_of,
    utcnow,
)
from mailing.staff.audit import AuditAction, audit
from mailing.states import (
    SUPPRESSED_SUBSCRIBER,
    ConsentChannel,
    ConsentEventKind,
    NoticeKind,
    SubscriberStatus,
    SubscriberTransitions,
    transition,
)
from mailing.subscribers import consent, records
from mailing.subscribers.addresses import keyed_hashes
from mailing.subscribers.desk import ADDRESS, REMOVED
from mailing.subscribers.import_file import (
    ImportRefused,
    Problem,
    Row,
    check_file,
    check_source,
    rows,
)
from mailing.subscribers.signup import _CREATE_PENDING

__all__ = ["ImportRefused", "Problem", "Report", "run"]

log = logging.getLogger(__name__)

CHANNEL = ConsentChannel.IMPORT
CHUNK = 1000
MAX_PROBLEMS_KEPT = 200  # invalid lines kept for the console's preview (all are counted)
UNKNOWN_WORDING = (
    "Unknown: the list this address was imported from did not record the wording this person "
    "agreed to."
)
WORDING_KIND = "import"

SUBSCRIBER = table_of(Subscriber)
SUBSCRIBER_THEME = table_of(SubscriberTheme)
CONSENT_TEXT = table_of(ConsentText)
SUPPRESSION = table_of(Suppression)
# The sign-up's own insert: a row only for an address not here yet (status given per row).
_CREATE = _CREATE_PENDING
_STORE_TEXT = {
    postgres: dialect_insert(CONSENT_TEXT).on_conflict_do_nothing(index_elements=["sha256"])
    for postgres, dialect_insert in ((False, sqlite_insert), (True, pg_insert))
}


@dataclass
class Counts:
    imported: int = 0
    asked: int = 0
    unchanged: int = 0
    suppressed: int = 0
    invalid: int = 0

    def add(self, other: Counts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Report:
    counts: Counts = field(default_factory=Counts)
    problems: list[Problem] = field(default_factory=list)  # the first MAX_PROBLEMS_KEPT
    lines: int = 0  # data lines read
    notices: int = 0  # re-permission emails queued


@dataclass
class _Chunk:
    counts: Counts = field(default_factory=Counts)
    notice_ids: list[int] = field(default_factory=list)


def _among(session: Session, column: sa.Column[str], values: list[str]) -> sa.ColumnElement[bool]:
    """`column IN values`; on PostgreSQL `= ANY(array)`, one parameter instead of a thousand."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(values)
    return column == sa.any_(sa.cast(sa.literal(values, ARRAY(sa.Text)), ARRAY(sa.Text)))


def _suppressed_keys(session: Session, keys: Sequence[str]) -> set[str]:
    secrets = get_settings().secret_key_list
    by_hash = {h: key for key in keys for h in keyed_hashes(key, secrets)}
    column = SUPPRESSION.c.address_hash
    found = session.execute(
        sa.select(column).where(_among(session, column, list(by_hash)))
    ).scalars()
    return {by_hash[h] for h in found}


def _store_wording(session: Session, text: str) -> str:
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    connection = session.connection()
    connection.execute(
        _STORE_TEXT[connection.dialect.name == "postgresql"],
        {"sha256": sha, "kind": WORDING_KIND, "version": WORDING_KIND, "text": text},
    )
    return sha


def _insert(
    connection: sa.Connection,
    table: sa.Table,
    values: Sequence[Mapping[str, object]],
    *,
    new_key: str | None = None,
) -> list[tuple[int, str]]:
    """Insert rows; with `new_key`, only those whose key is not taken, returning (id, key) of
    each inserted. On PostgreSQL one `INSERT ... SELECT FROM unnest(arrays)`: a thousand-row
    VALUES list cost psycopg more CPU to prepare than the database took to run it."""
    if connection.dialect.name != "postgresql":
        if new_key is None:
            connection.execute(sa.insert(table), values)
            return []
        return [(int(i), str(k)) for i, k in connection.execute(_CREATE[False], values)]
    columns = list(values[0])
    arrays = ", ".join(
        f"CAST(:{c} AS {table.c[c].type.compile(dialect=connection.dialect)}[])" for c in columns
    )
    # Names from our own table definitions only, never from the file.
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"  # noqa: S608
    if new_key is not None:
        sql += f" ON CONFLICT ({new_key}) DO NOTHING RETURNING id, {new_key}"
    params = {
        c: [v.value if isinstance(v, StrEnum) else v for v in (row[c] for row in values)]
        for c in columns
    }
    result = connection.execute(sa.text(sql), params)
    return [(int(i), str(k)) for i, k in result] if new_key is not None else []


def import_chunk(session: Session, chunk: Sequence[Row], source: str, now: datetime) -> _Chunk:
    """Import one chunk of valid rows in the caller's transaction."""
    out = _Chunk()
    firsts: dict[str, Row] = {}
    for row in chunk:
        if row.address.key in firsts:
            out.counts.unchanged += 1  # the same address again, in any case: already handled
        else:
            firsts[row.address.key] = row
    keys = sorted(firsts)  # in key order, so concurrent writers take locks in one order
    suppressed = _suppressed_keys(session, keys)
    existing = {
        key: (int(sid), SubscriberStatus(status))
        for sid, key, status in session.execute(
            sa.select(SUBSCRIBER.c.id, SUBSCRIBER.c.email_key, SUBSCRIBER.c.status).where(
                _among(session, SUBSCRIBER.c.email_key, keys)
            )
        )
    }
    fresh: list[Row] = []
    for key in keys:
        row = firsts[key]
        known = existing.get(key)
        if key in suppressed or (known and known[1] in SUPPRESSED_SUBSCRIBER):
            out.counts.suppressed += 1
        elif known is None:
            fresh.append(row)
        elif known[1] == SubscriberStatus.PENDING and row.consented_at is not None:
            _activate_pending(session, known[0], row, source)
            out.counts.imported += 1
        else:
            out.counts.unchanged += 1
    if fresh:
        _create(session, fresh, source, now, out)
    return out


def _create(session: Session, fresh: list[Row], source: str, now: datetime, out: _Chunk) -> None:
    connection = session.connection()
    created = {
        key: sid
        for sid, key in _insert(
            connection,
            SUBSCRIBER,
            [
                {
                    "email": r.address.email,
                    "email_key": r.address.key,
                    "status": SubscriberStatus.ACTIVE
                    if r.consented_at
                    else SubscriberStatus.PENDING,
                    "token_version": 1,
                    "created_at": now,
                    "updated_at": now,
                    "confirmed_at": r.consented_at,
                    "frequency": r.frequency,
                }
                for r in fresh
            ],
            new_key="email_key",
        )
    }
    made = [r for r in fresh if r.address.key in created]
    out.counts.unchanged += len(fresh) - len(made)  # signed up meanwhile: theirs stands
    if not made:
        return
    _insert(
        connection,
        SUBSCRIBER_THEME,
        [{"subscriber_id": created[r.address.key], "theme": t} for r in made for t in r.themes],
    )
    _record(session, [(created[r.address.key], r) for r in made], source, now)
    asked = [r for r in made if r.consented_at is None]
    out.counts.imported += len(made) - len(asked)
    out.counts.asked += len(asked)
    out.notice_ids += outbox.queue_many(
        session,
        [
            outbox.Owed(created[r.address.key], NoticeKind.REPERMISSION, r.themes, r.frequency)
            for r in asked
        ],
    )


def _record(session: Session, made: Sequence[tuple[int, Row]], source: str, now: datetime) -> None:
    """The ledger: IMPORTED at the time the person consented, with the wording's hash, for a row
    with evidence; REQUESTED now (no wording shown yet) for one asked again."""
    hashes: dict[str, str] = {}
    events = []
    for subscriber_id, row in made:
        wording_sha = None
        if row.consented_at is not None:
            text = row.wording or UNKNOWN_WORDING
            if text not in hashes:
                hashes[text] = _store_wording(session, text)
            wording_sha = hashes[text]
        events.append(
            {
                "subscriber_id": subscriber_id,
                "kind": ConsentEventKind.IMPORTED
                if row.consented_at
                else ConsentEventKind.REQUESTED,
                "occurred_at": row.consented_at or now,
                "channel": CHANNEL,
                "source": source,
                "themes": ",".join(row.themes),
                "frequency": row.frequency,
                "consent_text_sha256": wording_sha,
                "privacy_notice_sha256": None,
            }
        )
    _insert(session.connection(), consent.CONSENT_EVENT, events)


def _activate_pending(session: Session, subscriber_id: int, row: Row, source: str) -> None:
    """A pending sign-up the old list holds consent for: active now, on the list's evidence."""
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
    assert subscriber is not None
    # The named transition, as every status change (the row is locked above).
    values = {"frequency": row.frequency, "confirmed_at": row.consented_at, "updated_at": utcnow()}
    transition(
        session, SUBSCRIBER, SubscriberTransitions.CONFIRM, SUBSCRIBER.c.id == subscriber_id, values
    )
    session.expire(subscriber)
    records.set_themes(session, subscriber, row.themes)
    _record(session, [(subscriber_id, row)], source, utcnow())


# --- The whole file ---------------------------------------------------------------------------


def run(
    session_factory: Callable[[], Session],
    path: Path,
    source: str,
    *,
    dry_run: bool = False,
    publish: Callable[[list[int]], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_problem: Callable[[Problem], None] | None = None,
    staff_id: int | None = None,
) -> Report:
    """Import the file (ImportRefused, with nothing changed, if it cannot be). `publish` is given
    each chunk's re-permission notice ids after its commit; a dry run never commits."""
    source = check_source(source)
    total = check_file(path)
    report = Report()
    now = utcnow()
    session = session_factory()
    try:
        chunk: list[Row] = []

        def flush() -> None:
            if not chunk:
                return
            result = import_chunk(session, chunk, source, now)
            report.counts.add(result.counts)
            report.notices += len(result.notice_ids)
            chunk.clear()
            if dry_run:
                session.flush()
                return
            session.commit()
            if publish is not None and result.notice_ids:
                publish(result.notice_ids)

        for item in rows(path, now):
            report.lines += 1
            if isinstance(item, Problem):
                report.counts.invalid += 1
                if len(report.problems) < MAX_PROBLEMS_KEPT:
                    report.problems.append(item)
                if on_problem is not None:
                    on_problem(item)
            else:
                chunk.append(item)
                if len(chunk) >= CHUNK:
                    flush()
                    if progress is not None:
                        progress(report.lines, total)
        flush()
        if dry_run:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    if not dry_run:
        with session_factory() as audited:
            detail = f"source: {source}; {json.dumps(report.counts.as_dict())}"
            audit(audited, staff_id, AuditAction.IMPORTED, detail=ADDRESS.sub(REMOVED, detail))
            audited.commit()
    log.info(
        "import%s from a list of %d lines: %s",
        " (dry run)" if dry_run else "",
        report.lines,
        report.counts.as_dict(),
    )
    return report
