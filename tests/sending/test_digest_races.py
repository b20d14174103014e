"""A weekly summary and an unsubscribe racing, on PostgreSQL's row locks: whichever commits first
wins, and a summary is never sent after the unsubscribe committed (nor twice)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlmodel import Session

from mailing.db import get_engine
from mailing.mail.pipeline import Settled
from mailing.models import Subscriber, utcnow
from mailing.sending import digests
from mailing.sending import summaries as digest_sending
from mailing.subscribers import links, rights
from mailing.subscribers.tokens import Purpose
from tests.conftest import PG_SERVER
from tests.support.helpers import count, someone_waits_for_a_lock
from tests.support.residents import confirmed, put_update
from tests.support.sending import wait_until

pytestmark = pytest.mark.skipif(not PG_SERVER, reason="row-lock waits are PostgreSQL's")

MINDS = "healthy-minds"


def _planned_summary(client, smtp) -> str:
    """A weekly subscriber with one pending summary; returns their preferences token."""
    preferences = confirmed(client, smtp, "racer@example.net", [MINDS], frequency="weekly")
    saturday = digests.latest_saturday(utcnow()) + timedelta(days=7)
    until = digests.send_moment(saturday)
    put_update("News", [MINDS], sent_at=until - timedelta(days=1))
    with Session(get_engine()) as session:
        assert digests.plan(session, until + timedelta(minutes=1)) is not None
        session.commit()
    return preferences.rsplit("/", 1)[1]


def _unsubscribe(token: str, *, commit: bool = True) -> Session:
    session = Session(get_engine())
    subscriber = links.subscriber_for(session, Purpose.MANAGE, token)
    assert isinstance(subscriber, Subscriber)
    rights.unsubscribe(session, subscriber, channel="one-click")
    session.flush()
    if commit:
        session.commit()
    return session


def test_an_unsubscribe_waits_for_the_chunk_being_sent(client, smtp):
    token = _planned_summary(client, smtp)
    conn = get_engine().connect()
    transaction = conn.begin()
    [row] = digest_sending._claim(conn, 1, 2**31 - 1, 50)
    left = threading.Event()

    def leave() -> None:
        _unsubscribe(token).close()
        left.set()

    thread = threading.Thread(target=leave)
    thread.start()
    wait_until(someone_waits_for_a_lock, 10, "the unsubscribe to wait for the chunk's locks")
    assert not left.is_set()
    digest_sending._settle(conn, Settled(sent=[row]))
    transaction.commit()
    conn.close()
    thread.join(10)
    assert left.is_set()
    assert count("weekly_digest", "WHERE status = 'sent'") == 1
    assert count("subscriber", "WHERE status = 'unsubscribed'") == 1


def test_a_chunk_waits_for_an_unsubscribe_in_progress_and_then_sends_nothing(client, smtp):
    token = _planned_summary(client, smtp)
    leaving = _unsubscribe(token, commit=False)  # holds the subscriber row
    outcome: list[digest_sending.Outcome] = []
    thread = threading.Thread(
        target=lambda: outcome.append(digest_sending.deliver_batch(1, 2**31 - 1))
    )
    thread.start()
    wait_until(someone_waits_for_a_lock, 10, "the chunk to wait for the unsubscribe's lock")
    leaving.commit()
    leaving.close()
    thread.join(30)
    assert outcome and outcome[0].sent == 0 and outcome[0].cancelled == 1
    assert [m for m in smtp.outbox.messages() if m.subject.startswith("Your weekly")] == []
    assert count("weekly_digest", "WHERE status = 'cancelled'") == 1
