"""The counts the database keeps (migration 0014: delivery_count, subscriber_count) equal a real
COUNT of the rows after everything that changes them: sends with refusals and retries, a
bounce and a complaint, an unsubscribe mid-send, a cancel, an erasure, a change of themes, the
retention purge; and the pages and scrapes that read them (progress, /admin/stats, /metrics,
the figures) show exactly those counts. The last test does it on the production defaults
(`mailing worker` subprocesses, MAILING_ENV=production)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from mailing.db import get_engine, session_scope
from mailing.states import ConsentChannel, ErasureReason
from tests.sending.test_redis_faults import (  # noqa: F401  (fixtures)
    PrivateRedis,
    Services,
    private_redis,
    services,
)
from tests.support.sending import (
    Sink,
    SinkServer,
    add_subscribers,
    draft,
    start,
    update_row,
    wait_sent,
    wait_until,
)
from tests.support.sending import (
    api_staff as make_staff,
)


def _rows(sql: str) -> dict[tuple[Any, ...], int]:
    with get_engine().connect() as conn:
        return {tuple(r[:-1]): int(r[-1]) for r in conn.execute(sa.text(sql)) if r[-1]}


def real_deliveries() -> dict[tuple[Any, ...], int]:
    return _rows("SELECT update_id, status, COUNT(*) FROM delivery GROUP BY update_id, status")


def kept_deliveries() -> dict[tuple[Any, ...], int]:
    return _rows("SELECT update_id, status, SUM(n) FROM delivery_count GROUP BY update_id, status")


def real_subscribers() -> dict[tuple[Any, ...], int]:
    everyone = _rows("SELECT '', status, COUNT(*) FROM subscriber GROUP BY status")
    by_theme = _rows(
        "SELECT t.theme, s.status, COUNT(*) FROM subscriber_theme t "
        "JOIN subscriber s ON s.id = t.subscriber_id GROUP BY t.theme, s.status"
    )
    return {**everyone, **by_theme}


def kept_subscribers() -> dict[tuple[Any, ...], int]:
    return _rows("SELECT theme, status, SUM(n) FROM subscriber_count GROUP BY theme, status")


def assert_exact() -> None:
    assert kept_deliveries() == real_deliveries()
    assert kept_subscribers() == real_subscribers()


@pytest.fixture
def relay(settings_env: Callable[..., None], worker: Any) -> Iterator[Sink]:
    sink = Sink(refuse={"kc1@example.net"}, defer={"kc2@example.net": 1})
    with SinkServer(sink) as server:
        settings_env(
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            send_retry_backoff=0.1,
            send_retry_backoff_max=0.2,
        )
        yield server.sink


def _subscriber_id(email: str) -> int:
    with get_engine().connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT id FROM subscriber WHERE email = :e"), {"e": email}
            ).scalar_one()
        )


def test_delivery_counts_equal_the_rows_through_sends_retries_bounces_cancels_and_erasure(
    relay: Sink, client: Any
) -> None:
    from mailing import sending
    from mailing.figures import deliverability as deliverability
    from mailing.models import Delivery, Subscriber, table_of
    from mailing.states import DeliveryTransitions, transition
    from mailing.subscribers import erasure, rights

    add_subscribers(30, ["healthy-minds"], prefix="kc")
    add_subscribers(10, ["healthy-minds", "healthy-places"], prefix="kd")
    first = draft(themes=["healthy-minds"])
    assert start(first) == 40
    done = wait_sent(first, timeout=60)
    assert (done.sent, done.failed) == (39, 1)  # kc1 refused; kc2 deferred once, then taken
    assert_exact()

    delivery = table_of(Delivery)
    with session_scope() as session:
        bounced = transition(
            session,
            delivery,
            DeliveryTransitions.BOUNCE,
            delivery.c.subscriber_id == _subscriber_id("kc3@example.net"),
        )
        complained = transition(
            session,
            delivery,
            DeliveryTransitions.COMPLAIN,
            delivery.c.subscriber_id.in_([_subscriber_id(f"kc{i}@example.net") for i in (3, 4)]),
        )
    assert (bounced, complained) == (1, 2)  # kc3 bounced then complained; kc4 complained
    assert_exact()

    # A second update whose batches never run: its rows wait, pending.
    second = draft(themes=["healthy-places"])
    assert start(second, enqueue=False) == 10
    with session_scope() as session:
        leaving = session.get(Subscriber, _subscriber_id("kd0@example.net"))
        assert leaving is not None
        assert rights.unsubscribe(session, leaving, channel=ConsentChannel.EMAIL_LINK)
    assert_exact()
    with session_scope() as session:
        sending.cancel(session, second, None)
    assert_exact()

    with session_scope() as session:
        gone = session.get(Subscriber, _subscriber_id("kd1@example.net"))
        assert gone is not None
        erasure.erase(session, gone, ErasureReason.REQUEST)
    assert_exact()

    with session_scope() as session:
        live = sending.progress(session, first)
        assert (live.sent, live.failed, live.pending) == (38, 1, 0)  # kd1's copy went with them
        assert (live.bounced, live.complained) == (0, 2)
        stopped = sending.progress(session, second)
        assert (stopped.cancelled, stopped.pending, stopped.sent) == (9, 0, 0)
        figures = deliverability.for_update(session, first)
        assert (figures["bounced"], figures["complained"]) == (0, 2)
    auth = {"Authorization": f"Bearer {make_staff('admin', 'kc-admin@staff.example.org')}"}
    page = client.get(f"/admin/updates/{first}", headers=auth).json()
    assert (page["sent"], page["failed"], page["complained"]) == (38, 1, 2)


def test_subscriber_counts_equal_the_rows_through_sign_ups_changes_erasure_and_purge(
    client: Any, smtp: Any
) -> None:
    from mailing.figures import subscribers
    from mailing.models import Subscriber, SubscriberTheme, table_of, utcnow
    from mailing.states import SubscriberTransitions, transition
    from mailing.subscribers import erasure
    from tests.support.helpers import subscribe

    add_subscribers(12, ["healthy-living", "healthy-children"], prefix="ks")
    add_subscribers(5, ["healthy-living"], status="pending", prefix="kp")
    assert subscribe(client, "ks-new@example.org", ["healthy-living"]).status_code == 202
    assert_exact()

    table = table_of(Subscriber)
    themes = table_of(SubscriberTheme)
    with session_scope() as session:
        ids = [_subscriber_id(f"ks{i}@example.net") for i in range(4)]
        transition(session, table, SubscriberTransitions.UNSUBSCRIBE, table.c.id.in_(ids[:2]))
        transition(session, table, SubscriberTransitions.BOUNCE, table.c.id == ids[2])
        transition(session, table, SubscriberTransitions.CONFIRM, table.c.id == ids[0])
        # A change of themes: one dropped, one added.
        session.execute(sa.delete(themes).where(themes.c.subscriber_id == ids[3]))
        session.execute(sa.insert(themes).values(subscriber_id=ids[3], theme="healthy-minds"))
    assert_exact()

    with session_scope() as session:
        gone = session.get(Subscriber, ids[1])
        assert gone is not None
        erasure.erase(session, gone, ErasureReason.REQUEST)
    assert_exact()
    with session_scope() as session:
        purged = erasure.purge(session, utcnow() + timedelta(days=400))
    assert purged.unconfirmed >= 5  # the pending sign-ups, long expired by then
    assert_exact()

    with session_scope() as session:
        expected = {
            theme: {status: n for (t, status), n in real_subscribers().items() if t == theme}
            for theme in ("healthy-living", "healthy-children", "healthy-minds")
        }
        shown = subscribers.counts_by_theme(session)
        for theme, by_status in expected.items():
            assert {s: n for s, n in shown[theme].items() if n} == by_status
        assert subscribers.active_total(session) == real_subscribers()[("", "active")]
    auth = {"Authorization": f"Bearer {make_staff('admin', 'ks-admin@staff.example.org')}"}
    stats = client.get("/admin/stats", headers=auth).json()
    assert stats["subscribers"]["active"] == real_subscribers()[("", "active")]
    scrape = client.get("/metrics").text
    assert f'mailing_subscribers{{status="active"}} {real_subscribers()[("", "active")]}.0' in (
        scrape
    )


@pytest.mark.slow
def test_kept_counts_are_exact_on_the_production_defaults(
    database: str,
    private_redis: PrivateRedis,  # noqa: F811
    services: Services,  # noqa: F811
) -> None:
    """Plain `mailing worker` processes (production mode, every setting at its default, two of
    them on the same update) settle a send with a refusal: the counts are the rows'."""
    from mailing.sending import batch_tasks
    from tests.sending.test_recovery_defaults import _defaults_env, _publish_batches

    add_subscribers(1500, ["healthy-children"], prefix="kprod")
    update_id = draft(themes=["healthy-children"])
    with SinkServer(Sink(refuse={"kprod7@example.net"})) as server:
        env = _defaults_env(private_redis, server.port)
        services.worker(env, concurrency=2, queues=None)
        services.worker(env, concurrency=2, queues=None)
        _publish_batches(private_redis, update_id, batch_tasks(start(update_id, enqueue=False)))
        wait_until(lambda: update_row(update_id).status.value == "sent", 120, "the send to finish")
    assert kept_deliveries() == real_deliveries()
    assert kept_deliveries()[(update_id, "sent")] == 1499
    assert kept_deliveries()[(update_id, "failed")] == 1
