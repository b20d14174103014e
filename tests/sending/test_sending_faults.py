"""The pipeline when things break: a worker killed mid-send, the relay down, 550 answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailing.db import get_engine
from mailing.models import Update
from tests.support.helpers import count
from tests.support.sending import (
    GreetingRefusingSink,
    PipeliningSink,
    Sink,
    SinkServer,
    add_subscribers,
    draft,
    start,
    update_row,
    wait_sent,
    wait_until,
)
from workers.names import Queue, Task

KILL_N = int(os.environ.get("MAILING_TEST_KILL_N", "5000"))
REDIS = os.environ.get("MAILING_TEST_REDIS_URL", "")
BROKER = os.environ.get("MAILING_TEST_BROKER_URL", "")


def test_the_relay_down_for_a_while_then_up_loses_nothing_and_sends_no_duplicates(
    settings_env: Callable[..., None], worker: Any
) -> None:
    from mailing.mail.devcapture import _free_port

    port = _free_port()  # nothing listens here yet: connections are refused
    settings_env(
        smtp_host="127.0.0.1", smtp_port=port, send_retry_backoff=0.2, send_retry_backoff_max=1
    )
    emails = add_subscribers(300, ["healthy-minds"])
    update_id = draft(themes=["healthy-minds"])
    start(update_id)
    wait_until(
        lambda: count("delivery", "WHERE attempts > 0 AND status = 'pending'") > 0,
        30,
        "a failed attempt to reach the relay",
    )
    assert update_row(update_id).status.value == "sending"
    with SinkServer(port=port) as server:
        update = wait_sent(update_id, timeout=60)
        got = server.sink.recipients()
    assert set(got) == set(emails)
    assert max(got.values()) == 1
    assert (update.sent, update.failed) == (300, 0)


def _send_with_quick_retries(
    settings_env: Callable[..., None], server: SinkServer, theme: str, **settings: object
) -> tuple[Update, Counter[str]]:
    """Send an update on `theme` through this relay, retrying after 0.2 s (at most 1 s);
    returns the update once sent and how many copies each recipient got."""
    settings_env(
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        send_retry_backoff=0.2,
        send_retry_backoff_max=1,
        **settings,
    )
    update_id = draft(themes=[theme])
    start(update_id)
    update = wait_sent(update_id, timeout=60)
    return update, server.sink.recipients()


RELAYS = pytest.mark.parametrize("relay", [Sink, PipeliningSink], ids=["plain", "pipelining"])


@RELAYS
def test_550_for_some_recipients_fails_those_and_delivers_the_rest(
    settings_env: Callable[..., None], worker: Any, relay: type[Sink]
) -> None:
    emails = add_subscribers(200, ["healthy-places"])
    refused = set(emails[::17])
    with SinkServer(relay(refuse=refused)) as server:
        # 12 of 200 refused is over the send guard's 5 %: this test is about the rest going.
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port, send_guard_max_failure_rate=1)
        update_id = draft(themes=["healthy-places"])
        start(update_id)
        update = wait_sent(update_id, timeout=60)
        got = server.sink.recipients()
    assert set(got) == set(emails) - refused
    assert max(got.values()) == 1
    assert (update.sent, update.failed) == (200 - len(refused), len(refused))
    with get_engine().connect() as conn:
        errors = conn.execute(
            sa.text("SELECT error, attempts FROM delivery WHERE status = 'failed'")
        ).all()
    assert len(errors) == len(refused)
    assert all("550" in e and a == 1 for e, a in errors)  # permanent: tried once, never retried


@RELAYS
def test_a_450_for_some_recipients_retries_only_those_until_they_are_taken(
    settings_env: Callable[..., None], worker: Any, relay: type[Sink]
) -> None:
    emails = add_subscribers(120, ["healthy-minds"])
    busy = {e: 2 for e in emails[::10]}  # each refused twice with 450, then taken
    with SinkServer(relay(defer=dict(busy))) as server:
        update, got = _send_with_quick_retries(settings_env, server, "healthy-minds")
    assert set(got) == set(emails)
    assert max(got.values()) == 1
    assert (update.sent, update.failed) == (120, 0)
    with get_engine().connect() as conn:
        attempts = dict(
            conn.execute(
                sa.text(
                    "SELECT s.email, d.attempts FROM delivery d "
                    "JOIN subscriber s ON s.id = d.subscriber_id"
                )
            ).all()
        )
    assert all(attempts[e] == 3 for e in busy)
    assert all(attempts[e] == 1 for e in emails if e not in busy)


@RELAYS
def test_a_recipient_the_relay_always_defers_is_failed_after_the_last_try(
    settings_env: Callable[..., None], worker: Any, relay: type[Sink]
) -> None:
    emails = add_subscribers(40, ["healthy-places"])
    stuck = emails[7]
    with SinkServer(relay(defer={stuck: 1000})) as server:
        update, got = _send_with_quick_retries(
            settings_env, server, "healthy-places", send_max_retries=3
        )
    assert set(got) == set(emails) - {stuck}
    assert (update.sent, update.failed) == (39, 1)
    with get_engine().connect() as conn:
        failed = conn.execute(
            sa.text(
                "SELECT s.email, d.attempts, d.error FROM delivery d "
                "JOIN subscriber s ON s.id = d.subscriber_id WHERE d.status = 'failed'"
            )
        ).all()
    assert [tuple(f) for f in failed] == [(stuck, 3, "deferred 3 times")]


@pytest.fixture
def kill_broker() -> Iterator[str]:
    """A broker only the subprocess workers listen to (the run's Redis db for shared state)."""
    if not (BROKER.startswith("redis") and REDIS.startswith("redis")):
        pytest.skip(
            "needs a Redis broker: a worker in another process cannot reach the in-process "
            "memory broker (set MAILING_TEST_BROKER_URL and MAILING_TEST_REDIS_URL)"
        )
    import redis

    r = redis.Redis.from_url(REDIS)

    def forget_queues() -> None:
        for key in r.scan_iter():
            if not key.startswith(b"mailing:"):
                r.delete(key)

    forget_queues()
    yield REDIS
    forget_queues()


def _spawn_worker(broker: str, smtp_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MAILING_BROKER_URL": broker,
        "MAILING_SMTP_HOST": "127.0.0.1",
        "MAILING_SMTP_PORT": str(smtp_port),
    }
    mailing = Path(sys.executable).with_name("mailing")
    return subprocess.Popen(
        [
            str(mailing),
            "worker",
            "-Q",
            "updates",
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        env=env,
        start_new_session=True,  # its own process group: SIGKILL reaches the pool child too
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.mark.slow
def test_a_worker_killed_mid_send_loses_nothing_and_repeats_at_most_what_it_had_in_flight(
    database: str, kill_broker: str
) -> None:
    from celery import Celery

    from mailing import sending
    from mailing.config import get_settings
    from mailing.db import session_scope
    from mailing.models import utcnow

    publisher = Celery("kill-test", broker=kill_broker)

    def publish(update_id: int, tasks: int, countdown: float = 0) -> None:
        for _ in range(tasks):
            publisher.send_task(
                Task.SEND_UPDATE_BATCH.value, args=(update_id,), queue=Queue.UPDATES.value
            )

    emails = add_subscribers(KILL_N, ["healthy-living"])
    update_id = draft(themes=["healthy-living"])
    start(update_id, enqueue=False)
    publish(update_id, sending.batch_tasks(KILL_N))

    with SinkServer() as server:
        first = _spawn_worker(kill_broker, server.port)
        try:
            server.sink.wait_for(min(1000, KILL_N // 5), timeout=120)
        finally:
            _kill(first)
        arrived_before_restart = server.sink.count()
        assert arrived_before_restart < KILL_N, "the send finished before the kill"

        second = _spawn_worker(kill_broker, server.port)
        try:
            # The killed worker's tasks sit unacknowledged in the broker: reconcile (beat's
            # job) re-drives the send once no chunk has been settled for the stall period.
            later = utcnow() + timedelta(seconds=get_settings().send_stall_seconds + 1)
            with session_scope() as session:
                sending.reconcile(session, later, publish, lambda notice_id: None)
            update = wait_sent(update_id, timeout=180)
        finally:
            _kill(second)
        got = server.sink.recipients()

    assert set(got) == set(emails)  # nothing lost
    duplicates = sum(n - 1 for n in got.values())
    print(f"killed after {arrived_before_restart} mails; duplicates afterwards: {duplicates}")
    # At most what the killed worker had in flight: its lanes x the commit chunk.
    settings = get_settings()
    assert duplicates <= settings.smtp_connections * settings.send_commit_chunk
    assert (update.sent, update.failed) == (KILL_N, 0)
    assert count("delivery", "WHERE status = 'sent'") == KILL_N


def test_a_relay_refusing_our_greeting_is_unreachable_for_a_while_not_a_refusal_of_recipients(
    settings_env: Callable[..., None], worker: Any
) -> None:
    """554 to EHLO and HELO says the relay will not talk to us (yet), nothing about the
    recipients: the send waits and retries, nobody is marked failed, and the half-greeted
    connection is not reused (on it every later command would be answered 503)."""
    emails = add_subscribers(60, ["healthy-living"])
    relay = GreetingRefusingSink(refusals=2)
    with SinkServer(relay) as server:
        update, got = _send_with_quick_retries(settings_env, server, "healthy-living")
    assert relay.greetings_refused >= 2  # EHLO and HELO on the first connection, at least
    assert relay.refusals == 0
    assert set(got) == set(emails)
    assert max(got.values()) == 1
    assert (update.sent, update.failed) == (60, 0)
