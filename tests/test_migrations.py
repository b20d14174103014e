"""Migrations run on the test database (PostgreSQL or SQLite) and match the models."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import mailing.models  # noqa: F401
from mailing.db import get_engine
from mailing.models import ConsentEvent, Subscriber
from mailing.states import ConsentEventKind
from mailing.subscribers.consent import record


def test_schema_matches_the_models(database):
    with get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_consent_ledger_is_append_only(session):
    sub = Subscriber(email="ledger@example.org", email_key="ledger@example.org")
    session.add(sub)
    session.flush()
    record(session, sub.id, ConsentEventKind.REQUESTED, channel="api", themes=["healthy-minds"])
    session.commit()
    event_id = session.execute(sa.select(ConsentEvent.id)).scalar_one()
    with pytest.raises(sa.exc.DatabaseError):
        session.execute(
            sa.update(ConsentEvent)
            .where(ConsentEvent.id == event_id)
            .values(themes="healthy-places")
        )
        session.commit()
    session.rollback()
    # Erasure may still delete the subscriber's events.
    session.delete(session.get(Subscriber, sub.id))
    session.commit()
    assert session.exec(sa.select(sa.func.count()).select_from(ConsentEvent)).one()[0] == 0
