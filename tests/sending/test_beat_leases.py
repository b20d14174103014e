"""Two `mailing beat` processes at once (issue 27, point 3), on the production defaults but for
the two intervals, shortened so that a test sees many periods: a scheduled send starts once and
each recipient gets one copy, and each housekeeping job is published once per period in all.
Plus the lease's claim itself, on this run's database (PostgreSQL or SQLite).
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

import pytest

from mailing.db import get_engine, session_scope
from mailing.models import utcnow
from tests.sending.test_recovery_defaults import _defaults_env
from tests.sending.test_redis_faults import (  # noqa: F401  (fixtures)
    PrivateRedis,
    Services,
    private_redis,
    services,
)
from tests.sending.test_sending_faults import _kill
from tests.support.helpers import count
from tests.support.sending import SinkServer, add_subscribers, draft, update_row, wait_until
from workers.beat_lease import claim, period_of

INTERVAL = 1  # seconds: reconcile, weekly summaries, purge and figures every second


def test_a_period_is_claimed_by_one_caller_only(database: str) -> None:
    engine = get_engine()
    now = utcnow()
    period = period_of(now, 60)
    assert claim(engine, "job", period, "a", now)
    assert not claim(engine, "job", period, "b", now)  # the same period: the second loses
    assert not claim(engine, "job", period - 1, "b", now)  # an earlier one: never again
    assert claim(engine, "job", period + 1, "b", now)  # the next period: whoever comes first
    assert count("beat_lease") == 1


def _published(running: Services, job: str) -> int:
    """How many times a beat published `job`: a beat logs each task it sends ("Sending due
    task"), and a beat that lost the period's claim sends nothing. (The worker's own "received"
    lines for periodic jobs are quiet on purpose.)"""
    return sum(
        1
        for log in running.logs
        if "beat" in log.name
        for line in log.read_text(errors="replace").splitlines()
        if "Sending due task" in line and f"({job})" in line
    )


def _queued(redis: PrivateRedis) -> int:
    import redis as redis_client

    broker = redis_client.Redis.from_url(redis.url(0))
    try:
        return sum(int(broker.llen(q)) for q in ("transactional", "updates", "housekeeping"))
    finally:
        broker.close()


@pytest.mark.slow
def test_two_beats_start_a_scheduled_send_once_and_run_each_job_once_per_period(
    database: str,
    private_redis: PrivateRedis,  # noqa: F811
    services: Services,  # noqa: F811
) -> None:
    from mailing.sending import schedule

    emails = add_subscribers(40, ["healthy-places"], prefix="twobeats-")
    update_id = draft(themes=["healthy-places"])
    with session_scope() as session:
        now = utcnow()
        schedule(session, update_id, None, now + timedelta(seconds=2), now)
    with SinkServer() as server:
        env = {
            **_defaults_env(private_redis, server.port),
            "MAILING_RECONCILE_INTERVAL_SECONDS": str(INTERVAL),
            "MAILING_HOUSEKEEPING_INTERVAL_SECONDS": str(INTERVAL),
        }
        worker = services.worker(env, concurrency=2, queues="transactional,updates,housekeeping")
        started = time.time()
        beats = [services.beat(env, "--loglevel", "INFO") for _ in range(2)]
        wait_until(lambda: update_row(update_id).status.value == "sent", 60, "the scheduled send")
        # Let both beats tick through several more periods together.
        wait_until(lambda: time.time() - started > 15, 20, "fifteen periods")
        assert all(b.poll() is None for b in beats), "a beat exited"
        for beat in beats:
            _kill(beat)
        stopped = time.time()
        wait_until(lambda: _queued(private_redis) == 0, 30, "the worker to take every task")
        worker.terminate()  # a warm shutdown: it finishes its tasks and flushes its log
        worker.wait(timeout=60)
        got = server.sink.recipients()
    periods = math.floor(stopped / INTERVAL) - math.floor(started / INTERVAL) + 1
    runs = {
        job: _published(services, task)
        for job, task in (
            ("purge", "workers.tasks.purge"),
            ("figures", "workers.tasks.snapshot_figures"),
            ("reconcile", "workers.tasks.reconcile"),
            ("weekly", "workers.tasks.weekly_digests"),
        )
    }
    print(f"{periods} periods of {INTERVAL} s with two beats; tasks run: {runs}")
    for job, n in runs.items():
        assert 3 <= n <= periods, f"{job} ran {n} times in {periods} periods"
    assert set(got) == set(emails) and set(got.values()) == {1}
    assert count("delivery", f"WHERE update_id = {update_id} AND status = 'sent'") == len(emails)
    assert count("audit_log", f"WHERE update_id = {update_id} AND action = 'sent'") == 1
    assert services.database_errors() == []
