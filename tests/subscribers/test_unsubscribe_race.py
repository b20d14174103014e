"""Two unsubscribes of one person at once (two clicks, or a click and a complaint): the
subscriber's status changes through the one named transition, a conditional UPDATE, so exactly
one of them wins and the consent ledger records ONE withdrawal."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session, select

from mailing.db import get_engine
from mailing.models import ConsentEvent, Subscriber
from mailing.states import ConsentChannel, ConsentEventKind, SubscriberStatus
from mailing.subscribers import rights
from tests.conftest import PG_SERVER
from tests.support.helpers import someone_waits_for_a_lock
from tests.support.sending import add_subscribers, wait_until

pytestmark = pytest.mark.skipif(not PG_SERVER, reason="row-lock waits are PostgreSQL's")


def test_two_simultaneous_unsubscribes_record_one_withdrawal(database: str) -> None:
    [email] = add_subscribers(1, ["healthy-minds"], prefix="twice")
    first, second = Session(get_engine()), Session(get_engine())
    # Both read the subscriber while still active, as two requests arriving together do.
    one = first.exec(select(Subscriber).where(Subscriber.email == email)).one()
    two = second.exec(select(Subscriber).where(Subscriber.email == email)).one()
    assert one.status == two.status == SubscriberStatus.ACTIVE
    assert rights.unsubscribe(first, one, channel=ConsentChannel.ONE_CLICK) is True
    first.flush()  # holds the subscriber row until it commits
    answers: list[bool] = []

    def click_again() -> None:
        answers.append(rights.unsubscribe(second, two, channel=ConsentChannel.EMAIL_LINK))
        second.commit()

    thread = threading.Thread(target=click_again)
    thread.start()
    wait_until(someone_waits_for_a_lock, 10, "the second unsubscribe to wait for the first")
    first.commit()
    thread.join(30)
    assert answers == [False]
    first.close()
    second.close()
    with Session(get_engine()) as check:
        leaver = check.exec(select(Subscriber).where(Subscriber.email == email)).one()
        assert leaver.status == SubscriberStatus.UNSUBSCRIBED
        withdrawals = check.exec(
            select(ConsentEvent).where(
                ConsentEvent.subscriber_id == leaver.id,
                ConsentEvent.kind == ConsentEventKind.WITHDRAWN,
            )
        ).all()
    assert [w.channel for w in withdrawals] == [ConsentChannel.ONE_CLICK.value]
