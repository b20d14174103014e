"""Recovery on the defaults, as a deployment runs it: MAILING_ENV=production, every timing at its
default, `mailing worker` and `mailing beat` subprocesses on a private Redis, the suite's
database, an SMTP sink. Nobody calls the reconciler by hand.

- A worker SIGKILLed (its whole process group) mid-chunk, a new worker started: the send
  finishes within 90 seconds, nothing lost, at most one commit chunk twice; whether or not other
  batch tasks were queued behind the killed one; and without a storm of re-driven tasks.
- A confirmation email whose task is lost (the broker's Redis flushed before any worker took
  it) still arrives, from the notice outbox, within two minutes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.sending.test_redis_faults import (  # noqa: F401  (fixtures)
    HoldingSink,
    PrivateRedis,
    Services,
    private_redis,
    services,
)
from tests.sending.test_sending_faults import _kill
from tests.support.helpers import count
from tests.support.sending import SinkServer, add_subscribers, draft, start, update_row, wait_until
from workers.names import Queue, Task

RECOVERY_LIMIT = 90.0


def _defaults_env(redis: PrivateRedis, smtp_port: int) -> dict[str, str]:
    """The suite's database, production mode, and nothing but the deployment's own settings."""
    import os

    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MAILING_") or k.startswith("MAILING_TEST_")
    }
    return {
        **keep,
        "MAILING_ENV": "production",
        "MAILING_DATABASE_URL": os.environ["MAILING_DATABASE_URL"],
        "MAILING_SECRET_KEYS": os.environ["MAILING_SECRET_KEYS"],
        "MAILING_BASE_URL": "https://updates.example.org",
        "MAILING_BROKER_URL": redis.url(0),
        "MAILING_REDIS_URL": redis.url(1),
        "MAILING_SMTP_HOST": "127.0.0.1",
        "MAILING_SMTP_PORT": str(smtp_port),
    }


def _publish_batches(redis: PrivateRedis, update_id: int, tasks: int) -> None:
    from celery import Celery

    publisher = Celery("recovery-test", broker=redis.url(0))
    try:
        for _ in range(tasks):
            publisher.send_task(
                Task.SEND_UPDATE_BATCH.value, args=(update_id,), queue=Queue.UPDATES.value
            )
    finally:
        publisher.close()


def _batch_runs(running: Services) -> int:
    """Batch tasks the workers ran (each logs one line), across every worker's log."""
    return sum(
        log.read_text(errors="replace").count("batch:")
        for log in running.logs
        if "worker" in log.name
    )


@pytest.mark.slow
@pytest.mark.parametrize("recipients", [400, 6000], ids=["nothing-queued-behind", "queued-behind"])
def test_a_killed_worker_is_replaced_and_the_send_finishes_within_90_seconds_on_defaults(
    database: str,
    private_redis: PrivateRedis,  # noqa: F811
    services: Services,  # noqa: F811
    recipients: int,
) -> None:
    from mailing.config import get_settings
    from mailing.sending import batch_tasks

    emails = add_subscribers(recipients, ["healthy-living"], prefix=f"kill{recipients}-")
    update_id = draft(themes=["healthy-living"])
    sink = HoldingSink(hold_at=recipients // 4 + get_settings().send_commit_chunk // 2)
    with SinkServer(sink) as server:
        env = _defaults_env(private_redis, server.port)
        services.beat(env)
        first = services.worker(env, concurrency=1, queues=None)
        published = batch_tasks(start(update_id, enqueue=False))
        _publish_batches(private_redis, update_id, published)
        wait_until(sink.holding.is_set, 60, "the relay to hold a message mid-chunk")
        _kill(first)  # the whole process group: parent and pool children
        killed_at = time.monotonic()
        sink.released.set()
        services.worker(env, concurrency=1, queues=None)
        wait_until(
            lambda: update_row(update_id).status.value == "sent",
            RECOVERY_LIMIT + 30,
            "the send to finish",
        )
        recovered_in = time.monotonic() - killed_at
        got = sink.recipients()
    duplicates = sum(n - 1 for n in got.values())
    runs = _batch_runs(services)
    print(
        f"{recipients} recipients, {published} batch tasks published at the start: finished "
        f"{recovered_in:.1f} s after the kill; {duplicates} sent twice; {runs} batch task runs"
    )
    assert set(got) == set(emails)  # nothing lost
    assert recovered_in < RECOVERY_LIMIT
    # At most what the killed worker process had in flight: a chunk per lane.
    assert duplicates <= get_settings().smtp_connections * get_settings().send_commit_chunk
    assert count("delivery", "WHERE status = 'sent'") == recipients
    assert services.database_errors() == []
    # No storm: the initial tasks, their hand-offs (one per task every couple of seconds) and
    # at most one re-drive burst.
    assert runs <= published * 4 + 2 * published + 10


@pytest.mark.slow
def test_a_confirmation_whose_task_was_flushed_from_the_broker_still_arrives(
    database: str,
    private_redis: PrivateRedis,  # noqa: F811
    services: Services,  # noqa: F811
    smtp: Any,
) -> None:
    import redis
    from celery import Celery

    from mailing.db import session_scope
    from mailing.subscribers.addresses import normalise
    from mailing.subscribers.signup import request_subscription

    with SinkServer() as server:
        env = _defaults_env(private_redis, server.port)
        with session_scope() as session:
            notice_id = request_subscription(
                session, normalise("flushed@example.org"), [], channel="api", source=None
            )
        assert notice_id is not None
        publisher = Celery("outbox-test", broker=private_redis.url(0))
        publisher.send_task(
            Task.SEND_NOTICE.value, args=(notice_id,), queue=Queue.TRANSACTIONAL.value
        )
        publisher.close()
        redis.Redis.from_url(private_redis.url(0)).flushall()  # before any worker took it
        flushed_at = time.monotonic()
        services.worker(env, concurrency=1, queues=None)
        services.beat(env)
        server.sink.wait_for(1, timeout=120)
        arrived_in = time.monotonic() - flushed_at
        ((rcpt, message),) = server.sink.messages()
    print(f"confirmation arrived {arrived_in:.1f} s after the broker was flushed")
    assert rcpt == "flushed@example.org"
    assert "/confirm/" in message.as_string()
    assert arrived_in < 120
    # Sent, then deleted (the row goes in the transaction that saw the relay take it).
    wait_until(lambda: count("notice") == 0, 30, "the notice to leave the outbox")
