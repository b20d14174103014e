"""The kept "left after this copy" count (migration 0019: update_left_count) equals the join it
replaced (kept here as the oracle) for every update, after everything that moves it: real sends,
one-click unsubscribes, a complaint and a bounce arriving after the unsubscribe, a
re-subscription, an erasure, the retention purge, and the changes no entry point makes today
(unsubscribed_at or sent_at rewritten, a sent row inserted, a subscriber deleted outright); the
update's page (`GET /admin/updates/{id}`) shows it. The migration fills it from existing rows
and goes down cleanly."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from mailing.db import get_engine, session_scope
from mailing.models import Delivery, Subscriber, table_of, utcnow
from mailing.states import ErasureReason
from tests.conftest import DATABASE_URL, PG_SERVER
from tests.support.deliverability import DOMAIN, Copy, inbound_server, send_to
from tests.support.helpers import only_link, subscribe
from tests.support.mta import messages
from tests.support.selfservice import next_mail
from tests.support.sending import add_subscribers, draft, start, wait_sent
from tests.support.sending import api_staff as make_staff

# The figure as the update's page counted it before 0019: the oracle.
ORACLE = """
    SELECT d.update_id, COUNT(*) FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id
    WHERE d.status = 'sent' AND s.status = 'unsubscribed' AND s.unsubscribed_at >= d.sent_at
    GROUP BY d.update_id"""
KEPT = "SELECT update_id, SUM(n) FROM update_left_count GROUP BY update_id"
SUBSCRIBER, DELIVERY = table_of(Subscriber), table_of(Delivery)
ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


def _rows(sql: str, **params: Any) -> dict[int, int]:
    with get_engine().connect() as conn:
        return {int(r[0]): int(r[1]) for r in conn.execute(sa.text(sql), params) if r[1]}


def _one(sql: str, **params: Any) -> Any:
    with get_engine().begin() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _write(statement: Any, **values: Any) -> None:
    with get_engine().begin() as conn:
        conn.execute(statement.values(**values) if values else statement)


def _exec(sql: str, **params: Any) -> None:
    """Raw SQL; a time `t` is stored as the models store times (so SQLite compares like)."""
    statement = sa.text(sql)
    if "t" in params:
        statement = statement.bindparams(sa.bindparam("t", type_=DELIVERY.c.sent_at.type))
    with get_engine().begin() as conn:
        conn.execute(statement, params)


def assert_exact(client: Any = None, updates: tuple[int, ...] = ()) -> dict[int, int]:
    """The kept figure equals the oracle for every update, and the pages of `updates` show it."""
    real = _rows(ORACLE)
    assert _rows(KEPT) == real
    if client is not None:
        auth = {"Authorization": f"Bearer {_TOKEN[0]}"}
        for update_id in updates:
            page = client.get(f"/admin/updates/{update_id}", headers=auth)
            assert page.status_code == 200
            assert page.json()["unsubscribed"] == real.get(update_id, 0)
    return real


_TOKEN: list[str] = []


def _sid(email: str) -> int:
    return int(_one("SELECT id FROM subscriber WHERE email = :e", e=email))


def _sent_at(update_id: int, subscriber_id: int) -> datetime:
    with get_engine().connect() as conn:
        found = conn.execute(
            sa.select(Delivery.sent_at).where(  # type: ignore[call-overload]
                Delivery.update_id == update_id, Delivery.subscriber_id == subscriber_id
            )
        ).scalar_one()
    assert isinstance(found, datetime)
    return found


def _copy_update(copy: Copy) -> int:
    return int(_one("SELECT update_id FROM delivery WHERE id = :d", d=copy.delivery_id))


def _copy(update_id: int, email: str) -> Copy:
    sid = _sid(email)
    did = _one(
        "SELECT id FROM delivery WHERE update_id = :u AND subscriber_id = :s", u=update_id, s=sid
    )
    return Copy(int(did), sid, email)


def _one_click(client: Any, smtp: Any, email: str) -> None:
    """Unsubscribe as a mailbox provider does, from the List-Unsubscribe of their last copy."""
    [mail, *_] = [
        m
        for m in reversed(smtp.outbox.messages())
        if email in m.to and m.message["List-Unsubscribe-Post"]
    ]
    first = str(mail.message["List-Unsubscribe"]).split(",")[0].strip(" <>")
    link = first.removeprefix("http://testserver")
    answer = client.post(link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert answer.status_code == 200


def _send(smtp: Any, recipients: int) -> int:
    update_id = draft(themes=["healthy-minds"])
    before = len(smtp.outbox.messages())
    assert start(update_id) == recipients
    wait_sent(update_id, timeout=60)
    smtp.outbox.wait_for(before + recipients)
    return update_id


def test_the_kept_figure_equals_the_join_through_sends_leaving_coming_back_and_erasure(
    client: Any, smtp: Any, settings_env: Any
) -> None:
    from mailing.subscribers import erasure

    settings_env(bounce_domain=DOMAIN)
    _TOKEN[:] = [make_staff("admin", "lf-admin@staff.example.org")]
    add_subscribers(8, ["healthy-minds"], prefix="lf")
    with inbound_server() as inbound:
        a = _send(smtp, 8)
        _one_click(client, smtp, "lf0@example.net")
        _one_click(client, smtp, "lf1@example.net")
        assert assert_exact(client, (a,)) == {a: 2}

        b = _send(smtp, 6)
        _one_click(client, smtp, "lf2@example.net")
        assert assert_exact(client, (a, b)) == {a: 3, b: 1}

        # A complaint about lf2's copy of b, and a bounce of lf1's copy of a, after they left:
        # those copies are no longer `sent`, so no longer counted as leaving.
        complained = _copy(b, "lf2@example.net")
        send_to(
            inbound,
            complained.return_path,
            messages.arf(complained.return_path, complained.email, complained.return_path),
        )
        bounced = _copy(a, "lf1@example.net")
        send_to(inbound, bounced.return_path, messages.dsn(bounced.return_path, bounced.email))
        assert assert_exact(client, (a, b)) == {a: 2}

    # lf0 comes back: signs up again and confirms.
    confirm = only_link(
        next_mail(smtp, lambda: subscribe(client, "lf0@example.net", ["healthy-minds"])), "confirm"
    )
    assert client.post(confirm).status_code == 200
    assert assert_exact(client, (a, b)) == {a: 1}

    with session_scope() as session:
        gone = session.get(Subscriber, _sid("lf2@example.net"))
        assert gone is not None
        erasure.erase(session, gone, ErasureReason.REQUEST)
    assert assert_exact(client, (a, b)) == {}

    for email in ("lf3@example.net", "lf4@example.net", "lf5@example.net"):
        _one_click(client, smtp, email)
    assert assert_exact(client, (a, b)) == {a: 3, b: 3}

    # What no entry point does today, but the triggers follow all the same.
    lf3, lf4 = _sid("lf3@example.net"), _sid("lf4@example.net")
    a_sent, b_sent = _sent_at(a, lf3), _sent_at(b, lf3)
    _write(
        sa.update(SUBSCRIBER).where(SUBSCRIBER.c.id == lf3),
        unsubscribed_at=a_sent + (b_sent - a_sent) / 2,
    )
    assert assert_exact(client, (a, b)) == {a: 3, b: 2}  # lf3 left before b reached them
    mine = sa.and_(DELIVERY.c.update_id == a, DELIVERY.c.subscriber_id == lf4)
    _write(sa.update(DELIVERY).where(mine), sent_at=utcnow() + timedelta(days=1))
    assert assert_exact(client, (a, b)) == {a: 2, b: 2}
    c = draft(themes=["healthy-minds"])
    _write(sa.insert(DELIVERY), update_id=c, subscriber_id=lf4, status="sent", sent_at=b_sent)
    _write(sa.insert(DELIVERY), update_id=c, subscriber_id=lf3, status="pending")
    assert assert_exact(client, (a, b, c)) == {a: 2, b: 2, c: 1}
    # A copy settled `sent` for someone already gone, stamped before they left.
    pending = sa.and_(DELIVERY.c.update_id == c, DELIVERY.c.status == "pending")
    _write(sa.update(DELIVERY).where(pending), status="sent", sent_at=a_sent)
    assert assert_exact(client, (a, b, c)) == {a: 2, b: 2, c: 2}
    _write(sa.delete(SUBSCRIBER).where(SUBSCRIBER.c.id == lf4))  # outright, not an erasure
    assert assert_exact(client, (a, b, c)) == {a: 2, b: 1, c: 1}

    with session_scope() as session:
        purged = erasure.purge(session, utcnow() + timedelta(days=800))
    assert purged.retained == 3  # lf1 (bounced copy), lf3, lf5
    assert assert_exact(client, (a, b, c)) == {}


def test_the_migration_fills_the_figure_from_existing_rows_and_goes_down_cleanly(
    database: str,
) -> None:
    from mailing import migrate

    add_subscribers(6, ["healthy-minds"], prefix="lm")
    updates = [draft(themes=["healthy-minds"]) for _ in range(2)]
    config = migrate.alembic_config(DATABASE_URL)
    command.downgrade(config, "0019-1")
    try:
        assert "update_left_count" not in sa.inspect(get_engine()).get_table_names()
        now = utcnow()
        for n, update_id in enumerate(updates):
            _exec(
                "INSERT INTO delivery (update_id, subscriber_id, status, attempts, sent_at) "
                "SELECT :u, id, CASE WHEN email LIKE 'lm5%' THEN 'bounced' ELSE 'sent' END, 1, :t "
                "FROM subscriber",
                u=update_id,
                t=now + timedelta(hours=n),
            )
        # lm0, lm1 left after both copies; lm2 between them; lm3 before both; lm5 bounced.
        for i, hours in ((0, 5), (1, 5), (2, 0.5), (3, -1), (5, 5)):
            _exec(
                "UPDATE subscriber SET status = 'unsubscribed', unsubscribed_at = :t "
                "WHERE email = :e",
                t=now + timedelta(hours=hours),
                e=f"lm{i}@example.net",
            )
        command.upgrade(config, "head")
        assert assert_exact() == {updates[0]: 3, updates[1]: 2}
        _exec(
            "UPDATE subscriber SET status = 'unsubscribed', unsubscribed_at = :t "
            "WHERE email = 'lm4@example.net'",
            t=now + timedelta(hours=5),
        )
        assert assert_exact() == {updates[0]: 4, updates[1]: 3}  # and kept from then on
        if get_engine().dialect.name == "postgresql":
            # An update deleted with its rows. (On SQLite 0014's delivery_count trigger refuses
            # it: it adds a -1 row for the deleted update; the app deletes only drafts.)
            _exec("DELETE FROM theme_update WHERE id = :u", u=updates[0])
            assert assert_exact() == {updates[1]: 3}

        command.downgrade(config, "0019-1")
        names = sa.inspect(get_engine()).get_table_names()
        assert "update_left_count" not in names
        with get_engine().connect() as conn:
            if conn.dialect.name == "postgresql":
                left = "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'left_count%'"
            else:
                left = "SELECT count(*) FROM sqlite_master WHERE name LIKE 'left_count%'"
            assert conn.execute(sa.text(left)).scalar_one() == 0
        _exec(
            "UPDATE subscriber SET unsubscribed_at = NULL, status = 'active'"
        )  # no trigger left to fail
    finally:
        command.upgrade(config, "head")
    assert assert_exact() == {}


@pytest.mark.skipif(
    not PG_SERVER, reason="PostgreSQL's row locks and shards: SQLite has one writer"
)
def test_settling_workers_and_unsubscribes_racing_never_deadlock_and_stay_exact(
    database: str,
) -> None:
    """Two settlers mark an update's copies sent in chunks of 50 (the send's own statements)
    while two others unsubscribe the recipients (the app's own unsubscribe), who had an earlier
    copy too: every transaction commits, and the figure is the join's."""
    from mailing.models import utcnow as now
    from mailing.sending.chunk_sql import SETTLE_POSTGRES
    from mailing.states import ConsentChannel
    from mailing.subscribers import rights
    from tests.support.deliverability import another_update

    emails = add_subscribers(400, ["healthy-minds"], prefix="lr")
    first = another_update()[0]  # an earlier copy, already `sent`
    second = draft(themes=["healthy-minds"])
    start(second, enqueue=False)
    with get_engine().connect() as conn:
        ids = list(
            conn.execute(
                sa.select(DELIVERY.c.id).where(DELIVERY.c.update_id == second).order_by("id")
            ).scalars()
        )
    chunks = [ids[i : i + 50] for i in range(0, len(ids), 50)]
    errors: list[BaseException] = []
    progress = threading.Condition()
    left = [0]

    def settle(mine: list[tuple[int, list[int]]]) -> None:
        try:
            with get_engine().connect() as conn:
                for n, chunk in mine:
                    with progress:  # the n-th chunk goes once n/len(chunks) of them have left
                        progress.wait_for(lambda: left[0] >= n * len(emails) // len(chunks), 60)
                    with conn.begin():
                        values = {"chunk_ids": chunk, "failed_now": 0, "settled_at": now()}
                        conn.execute(SETTLE_POSTGRES, {"the_update": second, **values})
        except BaseException as e:
            errors.append(e)

    def leave(mine: list[str]) -> None:
        try:
            for email in mine:
                with session_scope() as session:
                    subscriber = session.get(Subscriber, _sid(email))
                    assert subscriber is not None
                    rights.unsubscribe(session, subscriber, channel=ConsentChannel.ONE_CLICK)
                with progress:
                    left[0] += 1
                    progress.notify_all()
        except BaseException as e:
            errors.append(e)

    random.Random(19).shuffle(emails)
    threads = [
        threading.Thread(target=settle, args=(list(enumerate(chunks))[0::2],)),
        threading.Thread(target=settle, args=(list(enumerate(chunks))[1::2],)),
        threading.Thread(target=leave, args=(emails[0::2],)),
        threading.Thread(target=leave, args=(emails[1::2],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    real = assert_exact()
    assert real[_copy_update(first)] == 400  # everyone left after the first copy
    assert 0 < sum(real.values()) - 400 <= 400  # and some after the second's, some before
