"""A deferred delivery that falls due between a batch's last claim and its end is not stranded.

The batch's last claim found nothing due; a delivery whose retry time passed just after that
claim must still make the batch ask to run again (at once), or no batch would send it until the
reconciler noticed (seen as a stuck send under load).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session

from mailing.db import get_engine
from mailing.models import utcnow
from mailing.sending import batch
from tests.support.sending import add_subscribers, draft, start


def test_a_delivery_due_since_the_last_claim_asks_for_a_retry_at_once(database):
    add_subscribers(3, ["healthy-minds"])
    update_id = draft(themes=["healthy-minds"])
    assert start(update_id, enqueue=False) == 3
    claimed_at = utcnow()
    with get_engine().begin() as conn:
        conn.execute(
            sa.update(batch.DELIVERY)
            .where(batch.DELIVERY.c.update_id == update_id)
            .values(retry_at=claimed_at + timedelta(microseconds=1))
        )
    with get_engine().connect() as conn:
        # What the last claim saw: nothing due yet at its instant.
        assert batch._claim(conn, update_id, 50, claimed_at) == []
        conn.rollback()
    with Session(get_engine()) as session:
        wait = batch._next_retry_in(session, update_id, claimed_at)
    assert wait is not None and wait < 1  # due already, so (about) at once


def test_a_delivery_due_later_asks_for_a_retry_then(database):
    add_subscribers(2, ["healthy-minds"])
    update_id = draft(themes=["healthy-minds"])
    assert start(update_id, enqueue=False) == 2
    claimed_at = utcnow()
    with get_engine().begin() as conn:
        conn.execute(
            sa.update(batch.DELIVERY)
            .where(batch.DELIVERY.c.update_id == update_id)
            .values(retry_at=claimed_at + timedelta(seconds=30))
        )
    with Session(get_engine()) as session:
        wait = batch._next_retry_in(session, update_id, claimed_at)
    assert wait is not None and 0 < wait <= 30
