"""Sign-ups written in batches (mailing/web/signup_batch.py, subscriptions.request_subscriptions):
a batch records each request exactly as it would be recorded on its own, one request's failure
does not fail the others, and two batches over the same addresses cannot deadlock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailing.db import get_engine, session_scope
from mailing.models import Subscriber
from mailing.states import Frequency, NoticeKind, SubscriberStatus
from mailing.subscribers.addresses import normalise
from mailing.subscribers.signup import SignupRequest, request_subscriptions
from tests.conftest import PG_SERVER
from tests.support.helpers import count


def _request(email: str, themes: list[str], **extra: object) -> SignupRequest:
    return SignupRequest(normalise(email), themes, "api", None, **extra)  # type: ignore[arg-type]


def _rows(sql: str) -> list[tuple[object, ...]]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def _subscriber_id(email: str) -> int:
    with session_scope() as s:
        found = s.exec(select(Subscriber).where(Subscriber.email_key == normalise(email).key))
        subscriber_id = found.one().id
    assert subscriber_id is not None
    return subscriber_id


def test_a_batch_records_each_request_as_it_would_alone(database):
    with session_scope() as s:  # one active and one pending subscriber before the batch
        request_subscriptions(s, [_request("active@example.org", ["healthy-minds"])])
        request_subscriptions(s, [_request("pending@example.org", ["healthy-minds"])])
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE subscriber SET status = :s WHERE email_key = 'active@example.org'"),
            {"s": SubscriberStatus.ACTIVE.value},
        )
        conn.execute(sa.text("DELETE FROM notice"))
    batch = [
        _request("New.One@example.org", ["healthy-minds"]),
        _request("active@example.org", ["healthy-places"]),
        _request("new.one@EXAMPLE.org", ["healthy-places"], frequency=Frequency.WEEKLY),
        _request("two@example.org", []),
        _request("pending@example.org", ["healthy-living"]),
    ]
    with session_scope() as s:
        notice_ids = request_subscriptions(s, batch)

    ids = {e: _subscriber_id(e) for e in ("new.one@example.org", "active@example.org")}
    ids |= {e: _subscriber_id(e) for e in ("two@example.org", "pending@example.org")}
    assert count("subscriber") == 4  # the address asked for twice made one row
    # Each request got its notice, in order: the active subscriber is told so, never re-asked.
    notices = {
        row[0]: row[1:]
        for row in _rows("SELECT id, subscriber_id, kind, themes, frequency FROM notice")
    }
    confirm, already = NoticeKind.CONFIRM.value, NoticeKind.ALREADY_SUBSCRIBED.value
    assert [notices[i] for i in notice_ids] == [
        (ids["new.one@example.org"], confirm, "healthy-minds", "immediate"),
        (ids["active@example.org"], already, "", "immediate"),  # nothing of the stranger's
        (ids["new.one@example.org"], confirm, "healthy-places", "weekly"),
        (ids["two@example.org"], confirm, "", "immediate"),
        (ids["pending@example.org"], confirm, "healthy-living", "immediate"),
    ]
    # One ledger event a request, in the order they came; none for the active address (what a
    # stranger asks for is not its owner's consent).
    events = _rows("SELECT subscriber_id, themes FROM consent_event ORDER BY id")[2:]
    assert events == [
        (ids["new.one@example.org"], "healthy-minds"),
        (ids["new.one@example.org"], "healthy-places"),
        (ids["two@example.org"], ""),
        (ids["pending@example.org"], "healthy-living"),
    ]
    # A pending subscriber's themes follow the latest request; an active one's do not change.
    themes = dict(_rows("SELECT subscriber_id, theme FROM subscriber_theme"))
    assert themes == {
        ids["new.one@example.org"]: "healthy-places",
        ids["active@example.org"]: "healthy-minds",
        ids["pending@example.org"]: "healthy-living",
    }


def test_the_hourly_cap_counts_each_request_of_a_batch(database):
    from mailing.config import get_settings

    cap = get_settings().confirmations_per_address_per_hour
    with session_scope() as s:
        answers = request_subscriptions(s, [_request("often@example.org", [])] * (cap + 2))
    assert [a is not None for a in answers] == [True] * cap + [False, False]
    assert count("notice") == cap
    assert count("consent_event") == cap + 2  # every request is evidence, mailed or not


def test_one_failing_request_does_not_fail_the_rest_of_its_batch(database, smtp, worker):
    """The batch's transaction fails as a whole; each request is then written on its own."""
    from mailing.web.routes.subscriptions import _write
    from mailing.web.signup_batch import SignupBatcher

    poison = normalise("poison@example.org").key

    def write(requests: Sequence[SignupRequest]) -> list[int | None]:
        if any(r.address.key == poison for r in requests):  # the whole batch fails, unwritten
            raise RuntimeError("this request cannot be stored")
        return _write(requests)

    batcher = SignupBatcher(write)
    emails = ["a@example.org", "poison@example.org", "b@example.org"]

    async def all_at_once() -> list[object]:
        return await asyncio.gather(
            *(batcher.accept(_request(e, [])) for e in emails), return_exceptions=True
        )

    with ThreadPoolExecutor(1) as pool:
        answers = pool.submit(asyncio.run, all_at_once()).result(timeout=60)
    assert isinstance(answers[1], RuntimeError)
    assert isinstance(answers[0], int) and isinstance(answers[2], int)
    # Written once each, on their own after the batch failed; the failed one not at all.
    assert count("subscriber") == 2
    assert count("consent_event") == 2
    assert len(smtp.outbox.wait_for(2)) == 2


@pytest.mark.skipif(not PG_SERVER, reason="row-lock order is PostgreSQL's; SQLite has one lock")
def test_two_batches_of_the_same_new_addresses_do_not_deadlock(database):
    emails = [f"shared{i:04d}@example.org" for i in range(2000)]
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def write(order: list[str]) -> None:
        try:
            start.wait(timeout=10)
            with session_scope() as s:
                request_subscriptions(s, [_request(e, ["healthy-minds"]) for e in order])
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(order,)) for order in (emails, emails[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert count("subscriber") == len(emails)
    assert count("consent_event") == 2 * len(emails)


@pytest.mark.skipif(not PG_SERVER, reason="PostgreSQL: SQLite is in-process, no round trips")
def test_a_batch_of_new_addresses_costs_the_same_few_statements_whatever_its_size(database):
    """On PostgreSQL, one statement each for the subscribers, their themes, the ledger and the
    notices, each a single multi-row INSERT (SQLAlchemy's "insertmanyvalues"), not psycopg's
    executemany, which sends a statement for each row; whether the batch holds 2 sign-ups or
    40. (SQLite, in-process, inserts notices a row at a time to return their ids in order.)"""
    seen: list[tuple[str, str]] = []

    def note(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT"):
            seen.append((statement.split()[2], context.execute_style.name))

    with session_scope() as s:  # the first sign-up ever also stores the consent wording
        request_subscriptions(s, [_request("first@example.org", [])])
    engine = get_engine()
    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        shapes = []
        for size in (2, 40):
            seen.clear()
            themes = ["healthy-minds", "healthy-places"]
            batch = [_request(f"size{size}-{i}@example.org", themes) for i in range(size)]
            with session_scope() as s:
                assert None not in request_subscriptions(s, batch)
            shapes.append(list(seen))
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    assert shapes[0] == shapes[1]
    assert shapes[0] == [
        (table, "INSERTMANYVALUES")
        for table in ("subscriber", "subscriber_theme", "consent_event", "notice")
    ]
