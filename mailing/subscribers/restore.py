"""Re-applying the erasure journal after a database restore (`mailing erasures reapply`): everyone
erased since the backup was taken is erased again, and their suppression hashes put back."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass

import click
import sqlalchemy as sa
from sqlmodel import Session, select

from mailing.cli_guard import guarded
from mailing.config import get_settings
from mailing.models import Subscriber, Suppression, table_of
from mailing.states import ErasureReason
from mailing.subscribers import journal
from mailing.subscribers.addresses import keyed_hashes
from mailing.subscribers.erasure import erase

log = logging.getLogger(__name__)


@dataclass
class Reapplied:
    journal_entries: int = 0
    erased_again: int = 0
    suppressions_restored: int = 0
    unreadable_lines: int = 0


def reapply(session: Session) -> Reapplied:
    """Erase again every subscriber the journal says was erased after their record was made,
    and put back the suppression hashes; idempotent. The caller commits."""
    entries, unreadable = journal.read()
    result = Reapplied(journal_entries=len(entries), unreadable_lines=unreadable)
    secrets = get_settings().secret_key_list
    came_back: set[str] = set()
    table = table_of(Subscriber)
    rows = session.execute(sa.select(table.c.id, table.c.email_key, table.c.created_at))
    for subscriber_id, email_key, created_at in rows.all():
        for h in keyed_hashes(email_key, secrets):
            entry = entries.get(h)
            if entry is None:
                continue
            if created_at > entry.at:
                came_back.add(h)  # signed up afresh after the erasure: theirs to keep
                break
            subscriber = session.get(Subscriber, subscriber_id)
            assert subscriber is not None
            with journal.replaying():
                erase(session, subscriber, ErasureReason.REAPPLIED, suppress=entry.keep_hash)
            result.erased_again += 1
            break
    held = set(session.exec(select(Suppression.address_hash)).all())
    for h, entry in entries.items():
        if entry.keep_hash and h not in held and h not in came_back:
            session.add(Suppression(address_hash=h, reason="erased"))
            result.suppressions_restored += 1
    log.info("erasure journal re-applied: %s", asdict(result))
    return result


def schema_is_current(session: Session) -> bool:
    """False before `mailing migrate` (no tables, or an older revision)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from mailing.migrate import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    current = set(MigrationContext.configure(session.connection()).get_current_heads())
    return current == heads


@click.group()
def erasures() -> None:
    """The erasure journal (MAILING_ERASURE_JOURNAL), kept outside the database's backups."""


@erasures.command("reapply")
@guarded
def erasures_reapply() -> None:
    """After restoring a backup: erase again everyone erased since it was taken."""
    from mailing.db import session_scope

    with session_scope() as session:
        if not schema_is_current(session):
            click.echo(
                "mailing: the database schema is not up to date: run `mailing migrate` first"
            )
            sys.exit(1)
        result = reapply(session)
    click.echo(f"erasure journal: {journal.path()}")
    click.echo(json.dumps(asdict(result)))
