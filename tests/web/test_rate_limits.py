"""Rate limits: per client IP (429 with Retry-After) and per address (at most 3 emails an hour)."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from mailing.mail.devcapture import _free_port
from mailing.ratelimit import MemoryLimiter, RedisLimiter, get_limiter
from mailing.web.app import create_app
from tests.conftest import REDIS
from tests.support.helpers import count, subscribe, table_snapshot


def test_ip_limit_answers_429_with_retry_after(client, settings_env, smtp):
    settings_env(rate_limit_per_ip=3)
    answers = [subscribe(client, f"ip{i}@example.org") for i in range(5)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "wait" in refused.json()["detail"]
    assert count("subscriber") == 3


def test_ip_limit_is_per_client(database, smtp, worker, settings_env):
    settings_env(rate_limit_per_ip=2)
    app = create_app()
    with (
        TestClient(app, client=("198.51.100.1", 5000)) as a,
        TestClient(app, client=("198.51.100.2", 5000)) as b,
    ):
        assert [subscribe(a, f"a{i}@example.org").status_code for i in range(3)] == [202, 202, 429]
        assert subscribe(b, "b0@example.org").status_code == 202


def test_at_most_three_confirmation_emails_per_address_per_hour(client, smtp):
    answers = [subscribe(client, "bombed@example.org") for _ in range(6)]
    assert {a.status_code for a in answers} == {202}
    assert {a.text for a in answers} == {'{"status":"pending"}'}
    mails = smtp.outbox.wait_for(3)
    assert len(mails) == 3
    # The worker has run every task queued by the six requests: still three.
    from tests.conftest import drain_worker

    drain_worker()
    assert len(smtp.outbox.messages()) == 3


def test_rate_limit_keys_hold_no_raw_address(client, smtp):
    subscribe(client, "keyed.person@example.org")
    smtp.outbox.wait_for(1)
    limiter = get_limiter()
    if REDIS:
        assert isinstance(limiter, RedisLimiter)
        keys = [k.decode() for k in limiter._redis.keys("mailing:*")]
    else:
        assert isinstance(limiter, MemoryLimiter)
        keys = list(limiter._counts)
    assert any(k.startswith(("confirm-mail:", "mailing:rl:confirm-mail:")) for k in keys), keys
    assert not any("keyed" in k or "example.org" in k for k in keys), keys


@pytest.mark.skipif(not REDIS, reason="needs Redis (MAILING_TEST_REDIS_URL)")
def test_the_event_loops_hits_count_in_the_same_bucket_as_the_threads_on_any_loop():
    """The per-IP limit is counted from the event loop (`hit_async`) with a client per loop
    (an asyncio client cannot move between loops: a test client, or a server restarted in
    the same process, runs a new one); both kinds of hit share one bucket."""
    limiter = RedisLimiter(REDIS)
    key = f"ip:loops-{uuid.uuid4().hex}"
    verdicts = [limiter.hit(key, 3, 60), limiter.hit(key, 3, 60)]
    for _ in range(2):  # two loops, each in a thread of its own (this one may run one already)
        with ThreadPoolExecutor(1) as thread:
            verdicts.append(thread.submit(asyncio.run, limiter.hit_async(key, 3, 60)).result())
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert 1 <= verdicts[-1].retry_after <= 60
    assert 0 < limiter._redis.ttl(f"mailing:rl:{key}") <= 60  # the window ends: no key for ever
    assert int(limiter._redis.get(f"mailing:rl:{key}")) == 4


def test_with_the_rate_limit_store_unreachable_a_sign_up_is_503_and_stores_nothing(
    database, smtp, worker, settings_env
):
    settings_env(redis_url=f"redis://127.0.0.1:{_free_port()}/0")  # nothing listens there
    before = table_snapshot()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        answer = subscribe(client, "store-down@example.org")
        form = client.post(
            "/subscriptions", data={"email": "store-down@example.org", "consent": "on"}
        )
    assert answer.status_code == form.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert table_snapshot() == before
