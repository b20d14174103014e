"""Storage limitation: expired sign-ups and lapsed unsubscribes are erased on a clock we control."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import select

from mailing.db import get_engine
from mailing.models import (
    ConsentEvent,
    ErasureLog,
    Subscriber,
    SubscriberTheme,
    Suppression,
    utcnow,
)
from mailing.states import ConsentEventKind, SubscriberStatus
from mailing.subscribers import links
from mailing.subscribers.addresses import normalise
from mailing.subscribers.erasure import PurgeResult, purge
from mailing.subscribers.records import address_hash
from mailing.subscribers.tokens import Purpose
from tests.conftest import drain_worker
from tests.support.helpers import count, only_link, subscribe
from tests.support.selfservice import active_subscriber, next_mail, reload


def _pending(client, smtp, email):
    return only_link(next_mail(smtp, lambda: subscribe(client, email)), "confirm")


def _unsubscribed(client, smtp, session, email):
    sub = active_subscriber(client, smtp, session, email)
    assert client.post(links.url_for(Purpose.UNSUBSCRIBE, sub)).status_code == 200
    return reload(session, email)


def _emails(session):
    session.expire_all()
    return sorted(r[0] for r in session.execute(sa.text("SELECT email FROM subscriber")).all())


def _purge_at(session, now):
    result = purge(session, now)
    session.commit()
    return result


def test_an_unconfirmed_sign_up_goes_once_its_link_has_expired(client, smtp, session):
    _pending(client, smtp, "never@example.org")
    active_subscriber(client, smtp, session, "active@example.org")
    now = utcnow()

    assert _purge_at(session, now + timedelta(days=6)) == PurgeResult(0, 0)
    assert _emails(session) == ["active@example.org", "never@example.org"]

    assert _purge_at(session, now + timedelta(days=8, hours=2)) == PurgeResult(1, 0)
    assert _emails(session) == ["active@example.org"]
    assert count("consent_event", "WHERE subscriber_id NOT IN (SELECT id FROM subscriber)") == 0
    [entry] = session.exec(select(ErasureLog)).all()
    assert entry.reason == "unconfirmed" and entry.rows_deleted >= 3
    # They never agreed to anything: not even a hash of their address is kept.
    assert count("suppression") == 0


def test_asking_again_restarts_the_clock_of_an_unconfirmed_sign_up(client, smtp, session):
    _pending(client, smtp, "slowpoke@example.org")
    session.execute(
        sa.text("UPDATE subscriber SET created_at = :t, updated_at = :t"),
        {"t": utcnow() - timedelta(days=6)},
    )
    session.commit()
    link = _pending(client, smtp, "slowpoke@example.org")  # a new link today
    assert _purge_at(session, utcnow() + timedelta(days=3)) == PurgeResult(0, 0)
    assert client.post(link).status_code == 200


def test_unsubscribed_people_are_reduced_to_the_suppression_hash_after_retention(
    client, smtp, session
):
    left = _unsubscribed(client, smtp, session, "left@example.org")
    active_subscriber(client, smtp, session, "stays@example.org")
    now = utcnow()

    assert _purge_at(session, now + timedelta(days=29)) == PurgeResult(0, 0)
    assert _emails(session) == ["left@example.org", "stays@example.org"]

    assert _purge_at(session, now + timedelta(days=31)) == PurgeResult(0, 1)
    assert _emails(session) == ["stays@example.org"]
    [suppressed] = session.exec(select(Suppression)).all()
    assert suppressed.address_hash == address_hash(normalise("left@example.org").key)
    [entry] = session.exec(select(ErasureLog)).all()
    assert entry.reason == "retention"
    assert count("delivery") == count("consent_event", f"WHERE subscriber_id = {left.id}") == 0
    # Active subscribers are never purged, however long ago they signed up.
    assert _purge_at(session, now + timedelta(days=3650)) == PurgeResult(0, 0)
    assert reload(session, "stays@example.org").status == SubscriberStatus.ACTIVE


def test_retention_period_is_a_setting(client, smtp, session, settings_env):
    _unsubscribed(client, smtp, session, "short@example.org")
    settings_env(unsubscribed_retention_days=2)
    assert _purge_at(session, utcnow() + timedelta(days=3)) == PurgeResult(0, 1)


def test_someone_who_asked_to_come_back_keeps_their_confirmation_link(client, smtp, session):
    _unsubscribed(client, smtp, session, "back@example.org")
    session.execute(
        sa.text("UPDATE subscriber SET unsubscribed_at = :t, updated_at = :t, created_at = :t"),
        {"t": utcnow() - timedelta(days=60)},
    )
    session.commit()
    link = _pending(client, smtp, "back@example.org")
    assert _purge_at(session, utcnow()) == PurgeResult(0, 0)
    assert client.post(link).status_code == 200
    assert reload(session, "back@example.org").status == SubscriberStatus.ACTIVE


def _signed_up_long_ago(session, email, status, days=40):
    """A subscriber whose whole history lies `days` in the past, as if the clock had run on."""
    then = utcnow() - timedelta(days=days)
    address = normalise(email)
    sub = Subscriber(
        email=address.email,
        email_key=address.key,
        status=status,
        created_at=then,
        updated_at=then,
        confirmed_at=then if status != SubscriberStatus.PENDING else None,
        unsubscribed_at=then if status == SubscriberStatus.UNSUBSCRIBED else None,
    )
    session.add(sub)
    session.flush()
    session.add(SubscriberTheme(subscriber_id=sub.id, theme="healthy-minds"))
    kinds = {
        SubscriberStatus.PENDING: [ConsentEventKind.REQUESTED],
        SubscriberStatus.ACTIVE: [ConsentEventKind.REQUESTED, ConsentEventKind.CONFIRMED],
        SubscriberStatus.UNSUBSCRIBED: [
            ConsentEventKind.REQUESTED,
            ConsentEventKind.CONFIRMED,
            ConsentEventKind.WITHDRAWN,
        ],
    }[status]
    for kind in kinds:
        session.add(
            ConsentEvent(
                subscriber_id=sub.id, kind=kind, occurred_at=then, channel="api", themes=""
            )
        )
    session.commit()


def test_mailing_purge_command(client, smtp, session):
    for email, status in (
        ("cli-pending@example.org", SubscriberStatus.PENDING),
        ("cli-left@example.org", SubscriberStatus.UNSUBSCRIBED),
        ("cli-active@example.org", SubscriberStatus.ACTIVE),
    ):
        _signed_up_long_ago(session, email, status)
    get_engine().dispose()  # SQLite: let the other process write

    done = subprocess.run(
        [sys.executable, "-m", "mailing.cli", "purge"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "purged 1 unconfirmed sign-ups and 1 unsubscribed" in done.stdout
    assert _emails(session) == ["cli-active@example.org"]
    assert sorted(e.reason for e in session.exec(select(ErasureLog)).all()) == [
        "retention",
        "unconfirmed",
    ]


def test_the_hourly_beat_task_purges_through_the_worker(client, smtp, session):
    from workers.celery_app import app

    _signed_up_long_ago(session, "beat-pending@example.org", SubscriberStatus.PENDING)
    _signed_up_long_ago(session, "beat-left@example.org", SubscriberStatus.UNSUBSCRIBED)
    _signed_up_long_ago(session, "beat-active@example.org", SubscriberStatus.ACTIVE)
    schedule = app.conf.beat_schedule["purge-expired-data"]
    app.send_task(schedule["task"])
    drain_worker()
    assert _emails(session) == ["beat-active@example.org"]
