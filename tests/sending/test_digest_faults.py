"""Weekly summaries whose worker is SIGKILLed mid-chunk, finished by beat alone.

The production shape in separate processes, as tests/sending/test_redis_faults.py runs it: a private
`redis-server`, a `mailing worker` and a `mailing beat`, whose weekly_digests task is the only
recovery there is. The week is planned here with a controlled clock, as if beat had planned it
and died before handing the rows to any worker.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from mailing.db import get_engine
from mailing.models import utcnow
from mailing.sending import digests
from tests.sending.test_redis_faults import (  # noqa: F401  (fixtures)
    HoldingSink,
    PrivateRedis,
    Services,
    _env,
    _hold_at,
    private_redis,
    services,
)
from tests.sending.test_sending_faults import KILL_N, _kill
from tests.support.helpers import count
from tests.support.residents import put_update
from tests.support.sending import SinkServer, add_subscribers, wait_until


def _weekly_subscribers_with_a_planned_week() -> list[str]:
    emails = add_subscribers(KILL_N, ["healthy-living"], prefix="weekly")
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE subscriber SET frequency = :f WHERE email LIKE 'weekly%'"),
            {"f": "weekly"},
        )
    until = digests.send_moment(digests.latest_saturday(utcnow()) + timedelta(days=7))
    put_update("Healthy living", ["healthy-living"], sent_at=until - timedelta(days=1))
    with Session(get_engine()) as session:
        planned = digests.plan(session, until + timedelta(minutes=1))
        session.commit()
    assert planned is not None and planned.digests == KILL_N
    return emails


@pytest.mark.slow
def test_a_worker_killed_mid_summary_is_finished_by_beat_with_at_most_a_chunk_twice(
    database: str,
    private_redis: PrivateRedis,  # noqa: F811
    services: Services,  # noqa: F811
) -> None:
    from mailing.config import get_settings

    emails = _weekly_subscribers_with_a_planned_week()
    sink = HoldingSink(hold_at=_hold_at())
    with SinkServer(sink) as server:
        env = _env(private_redis, server.port)
        services.beat(env)  # hands the planned rows to workers: nobody else enqueues them
        first = services.worker(env, concurrency=1)
        wait_until(sink.holding.is_set, 60, f"{sink.hold_at} summaries to arrive")
        _kill(first)  # mid-chunk: its row locks end with its database connection
        arrived = sink.count()
        sink.released.set()
        assert arrived < KILL_N, "every summary went before the kill"
        services.worker(env, concurrency=1)
        wait_until(
            lambda: count("weekly_digest", "WHERE status = 'pending'") == 0,
            90,
            "beat to re-drive the killed worker's summaries",
        )
        got = sink.recipients()
    assert set(got) == set(emails)  # nothing lost
    assert count("weekly_digest", "WHERE status = 'sent'") == KILL_N
    duplicates = sum(n - 1 for n in got.values())
    print(f"killed after {arrived} summaries; duplicates afterwards: {duplicates}")
    # Only mails that went out inside the killed chunk's lost transaction go again.
    # At most what it had in flight: a chunk on each of its lanes.
    assert 0 < duplicates <= get_settings().smtp_connections * get_settings().send_commit_chunk
    assert services.database_errors() == []
