"""The staff sign-in throttle (issue 21), in production with every setting at its default: wrong
codes count per account until a second factor succeeds; wrong passwords per account and client,
so a stranger cannot lock the owner out; a per-account ceiling with growing waits; re-checks
counted per session; admins told by email; IPv6 clients counted by their /64."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mailing.models import Staff, StaffSession, utcnow
from mailing.ratelimit import client_bucket, get_limiter
from mailing.staff import signin
from tests.conftest import drain_worker
from tests.staff.test_console import csrf_of
from tests.support.helpers import count
from tests.support.staff import PASSWORD, give_totp, make_staff, next_code

OWNER, STRANGER = "198.51.100.7", "203.0.113.66"
OUR_LOGGERS = ("mailing", "workers", "celery")


@pytest.fixture
def app(database, smtp, worker, settings_env):
    from mailing.web.app import create_app

    settings_env(env="production")
    with TestClient(create_app()) as started:
        yield started.app


def web(app, ip: str) -> TestClient:
    """A browser at the client address `ip`."""
    return TestClient(app, base_url="https://testserver", client=(ip, 50000))


def password(browser: TestClient, email: str, secret: str = PASSWORD):
    form = browser.get("/admin/login")
    return browser.post(
        "/admin/login",
        data={"email": email, "password": secret, "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )


def code(browser: TestClient, value: str):
    page = browser.get("/admin/login/second-factor")
    return browser.post(
        "/admin/login/second-factor",
        data={"csrf_token": csrf_of(page.text), "second_factor_code": value},
        follow_redirects=False,
    )


def staff_row(session, email: str) -> Staff:
    session.expire_all()
    return session.exec(sa.select(Staff).where(Staff.email == email)).scalar_one()


def _end_lock(session, email: str) -> None:
    """The lock's time passes (its end moved into the past)."""
    session.execute(
        sa.update(Staff)
        .where(Staff.email == email)
        .values(factor_locked_until=utcnow() - timedelta(seconds=1))
    )
    session.commit()


# ---------------------------------------------------------------------------------------------
# Finding 1: wrong codes count until a second factor succeeds


def test_wrong_codes_count_across_password_re_entries_and_clients_then_lock(app, session):
    email = "editor@gla.example"
    make_staff(session, email)
    give_totp(email)
    first = web(app, OWNER)
    assert password(first, email).status_code == 303
    assert [code(first, "000000").status_code for _ in range(4)] == [401] * 4
    # The right password again, from another client: the count goes on.
    second = web(app, STRANGER)
    assert password(second, email).status_code == 303
    locked = code(second, "000000")  # the fifth wrong code since a factor last succeeded
    assert locked.status_code == 429 and "Too many wrong codes" in locked.text
    assert [code(second, "000000").status_code for _ in range(3)] == [429] * 3
    assert 14 * 60 < int(locked.headers["retry-after"]) <= 15 * 60 + 1
    # Locked for the account: the right code, from anywhere, after a right password.
    third = web(app, "192.0.2.9")
    assert password(third, email).status_code == 303
    assert code(third, next_code(email)).status_code == 429
    assert count("staff_session", "WHERE factor_at IS NOT NULL") == 0
    assert count("audit_log", "WHERE action = 'second-factor-failed'") == 9

    # The next lockout in a row lasts twice as long.
    _end_lock(session, email)
    assert [code(third, "000000").status_code for _ in range(5)] == [401] * 4 + [429]
    row = staff_row(session, email)
    assert row.factor_lockouts == 2
    left = signin.code_lock_left(row)
    assert 29 * 60 < left <= 30 * 60 + 1

    # Once the lock is over, a right code signs in and clears the count and the doubling.
    _end_lock(session, email)
    assert code(third, next_code(email)).status_code == 303
    row = staff_row(session, email)
    assert (row.factor_failures, row.factor_lockouts, row.factor_locked_until) == (0, 0, None)


# ---------------------------------------------------------------------------------------------
# Finding 2: a stranger cannot lock a colleague out


def test_a_strangers_wrong_passwords_stop_the_stranger_not_the_owner(app, session):
    email = "sender@gla.example"
    make_staff(session, email, "sender")
    give_totp(email)
    stranger = web(app, STRANGER)
    tries = [password(stranger, email, "not the password!").status_code for _ in range(6)]
    assert tries == [401] * 5 + [429]
    # The stranger's client is stopped even with the right password...
    refused = password(stranger, email)
    assert refused.status_code == 429 and signin.LOCKED in refused.text
    assert int(refused.headers["retry-after"]) <= 15 * 60
    # ...while the owner, from their own address, signs in.
    owner = web(app, OWNER)
    assert password(owner, email).status_code == 303
    assert code(owner, next_code(email)).status_code == 303
    assert owner.get("/admin").status_code == 200
    assert count("audit_log", "WHERE action = 'sign-in-failed'") == 5


def _age_factor() -> None:
    from mailing.db import session_scope

    with session_scope() as s:
        s.execute(sa.update(StaffSession).values(factor_at=utcnow() - timedelta(minutes=11)))


def _confirm(browser: TestClient, value: str):
    page = browser.get("/admin/reauth?next=/admin/staff")
    return browser.post(
        "/admin/reauth",
        data={
            "csrf_token": csrf_of(page.text),
            "next": "/admin/staff",
            "second_factor_code": value,
        },
        follow_redirects=False,
    )


def test_confirm_it_is_you_is_never_blocked_by_failures_elsewhere(app, session):
    email = "admin@gla.example"
    make_staff(session, email, "admin")
    give_totp(email)
    owner = web(app, OWNER)
    assert password(owner, email).status_code == 303
    assert code(owner, next_code(email)).status_code == 303
    # Someone holding the password locks the second-factor step, and floods wrong passwords.
    thief = web(app, STRANGER)
    assert password(thief, email).status_code == 303
    assert [code(thief, "000000").status_code for _ in range(5)][-1] == 429
    for _ in range(5):
        password(web(app, "192.0.2.50"), email, "not the password!")
    # The owner's open session still confirms it is them.
    _age_factor()
    assert _confirm(owner, next_code(email)).status_code == 303
    assert owner.get("/admin/staff").status_code == 200


def test_a_re_check_counts_wrong_codes_per_session_only(app, session):
    email = "admin@gla.example"
    make_staff(session, email, "admin")
    give_totp(email)
    one, other = web(app, OWNER), web(app, OWNER)
    for browser in (one, other):
        assert password(browser, email).status_code == 303
        assert code(browser, next_code(email)).status_code == 303
    _age_factor()
    assert [_confirm(one, "000000").status_code for _ in range(6)] == [401] * 5 + [429]
    assert _confirm(one, next_code(email)).status_code == 429  # this session waits
    assert _confirm(other, next_code(email)).status_code == 303  # another one does not
    assert staff_row(session, email).factor_failures == 0  # nor does the account's sign-in


def test_the_account_ceiling_bounds_a_distributed_guesser(app, session):
    email = "editor@gla.example"
    make_staff(session, email)
    give_totp(email)
    # The figure: trying the moment each wait ends, from any number of clients.
    assert signin.most_wrong_passwords(timedelta(days=1)) == 62
    assert signin.most_wrong_passwords(timedelta(days=2)) == 62 + 48
    clients = (f"192.0.2.{i}" for i in range(1, 250))
    # Ten wrong passwords, two from each of five clients, cost nothing but the count...
    for _ in range(5):
        browser = web(app, next(clients))
        assert [password(browser, email, "guess!guess!").status_code for _ in range(2)] == [401] * 2
    # ...then every further one makes the account wait, for everyone, doubling up to 30 minutes.
    for failures in range(signin.FREE_FAILURES + 1, signin.FREE_FAILURES + 8):
        assert password(web(app, next(clients)), email, "guess!guess!").status_code == 401
        waiting = password(web(app, next(clients)), email)  # even the right password
        assert waiting.status_code == 429 and "Wait" in waiting.text
        expected = signin.wait_after(failures)
        assert expected - 2 <= int(waiting.headers["retry-after"]) <= expected
        get_limiter().forget("staff-wait:", "")  # the wait passes
    assert signin.wait_after(signin.FREE_FAILURES + 7) == 30 * 60
    # Between waits the right password works, and does not give the guesser fresh tries.
    owner = web(app, OWNER)
    assert password(owner, email).status_code == 303
    assert password(web(app, next(clients)), email, "guess!guess!").status_code == 401
    assert password(web(app, next(clients)), email).status_code == 429


def test_admins_are_emailed_when_an_account_sees_repeated_failures(app, session, smtp, caplog):
    make_staff(session, "admin@gla.example", "admin")
    make_staff(session, "editor@gla.example")
    make_staff(session, "gone@gla.example", "admin")
    session.execute(
        sa.update(Staff).where(Staff.email == "gone@gla.example").values(disabled_at=utcnow())
    )
    session.commit()
    caplog.set_level(logging.DEBUG)
    for ip in (STRANGER, "192.0.2.77"):
        browser = web(app, ip)
        for _ in range(5):
            password(browser, "editor@gla.example", "not the password!")
    drain_worker()
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["admin@gla.example"]
    assert mail.subject.startswith("Repeated failed sign-ins")
    assert "editor@gla.example" in mail.part("plain")
    assert "/admin/staff" in mail.part("plain")
    # A second factor locked by wrong codes tells them too, at most once an hour per account.
    give_totp("editor@gla.example")
    thief = web(app, "192.0.2.78")
    assert password(thief, "editor@gla.example").status_code == 303
    assert [code(thief, "000000").status_code for _ in range(5)][-1] == 429
    drain_worker()
    assert len(smtp.outbox.messages()) == 1
    assert count("notice") == 0  # sent and gone
    ours = [r.getMessage() for r in caplog.records if r.name.split(".")[0] in OUR_LOGGERS]
    assert ours and not [line for line in ours if "gla.example" in line]  # no address logged


# ---------------------------------------------------------------------------------------------
# Finding 3: an IPv6 client is counted by its /64


def test_client_buckets_are_ipv4_addresses_and_ipv6_64s():
    assert client_bucket("203.0.113.5") == "203.0.113.5"
    assert client_bucket("2001:db8:1:2:aaaa::1") == client_bucket("2001:db8:1:2::ffff")
    assert client_bucket("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_bucket("2001:db8:1:3::1") != client_bucket("2001:db8:1:2::1")
    assert client_bucket("::ffff:203.0.113.5") == "203.0.113.5"
    assert client_bucket("testclient") == "testclient"


def test_the_per_ip_limit_counts_an_ipv6_client_by_its_64(app, settings_env):
    from mailing.config import Settings

    # The tests' own settings raise the limit: back to its default, 30 a minute.
    settings_env(rate_limit_per_ip=Settings.model_fields["rate_limit_per_ip"].default)
    answers = [
        web(app, f"2001:db8:1:2::{i:x}").post("/erasure-requests", json={}).status_code
        for i in range(1, 32)
    ]
    assert answers == [422] * 30 + [429]
    assert web(app, "2001:db8:1:3::1").post("/erasure-requests", json={}).status_code == 422


def test_wrong_passwords_from_one_ipv6_64_stop_all_of_it(app, session):
    email = "editor@gla.example"
    make_staff(session, email)
    for i in range(1, 6):
        assert password(web(app, f"2001:db8:5:6::{i}"), email, "nope nope nope").status_code == 401
    assert password(web(app, "2001:db8:5:6::ffff"), email).status_code == 429
    assert password(web(app, "2001:db8:5:7::1"), email).status_code == 303
