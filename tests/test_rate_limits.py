"""Rate limits: per client IP (429 with Retry-After) and per address (at most 3 emails an hour)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mailing.ratelimit import MemoryLimiter, RedisLimiter, get_limiter
from mailing.web.app import create_app
from tests.conftest import REDIS
from tests.helpers import count, subscribe


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
