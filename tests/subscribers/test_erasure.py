"""Right to erasure: asked for by email, done at once, and provably leaving no trace of the
address in a full database dump or in the logs; only a keyed hash remains, to stop mail."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import subprocess

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailing.config import get_settings
from mailing.db import get_engine
from mailing.logs import RedactingFilter
from mailing.metrics import ERASURES
from mailing.models import ErasureLog, Subscriber, Suppression, utcnow
from mailing.ratelimit import get_limiter
from mailing.states import DeliveryStatus, NoticeKind, SubscriberStatus
from mailing.subscribers import links
from mailing.subscribers.addresses import normalise
from mailing.subscribers.records import address_hash, is_suppressed
from mailing.subscribers.signup import confirmation_token
from mailing.subscribers.tokens import Purpose
from tests.conftest import REDIS, drain_worker
from tests.support.helpers import count, only_link, subscribe
from tests.support.selfservice import active_subscriber, add_delivery, next_mail, reload

ADDRESS = "Zqxv-Erasure-7781@Example.org"
LOCAL_PART = "zqxv-erasure-7781"
# Loggers of the test's own tools, not the service: the HTTP client and the SMTP capture.
TEST_TOOLS = ("httpx", "mail.log")


def _path(url):
    return url.removeprefix("http://testserver")


def _database_dump() -> str:
    """The whole database as text, made the way an auditor would make it."""
    url = get_settings().database_url
    if url.startswith("postgresql"):
        plain = sa.engine.make_url(url).set(drivername="postgresql")
        result = subprocess.run(
            ["pg_dump", "--data-only", "--no-owner", plain.render_as_string(hide_password=False)],
            capture_output=True,
            check=True,
            timeout=60,
        )
        return result.stdout.decode("utf-8", "replace")
    path = sa.engine.make_url(url).database
    get_engine().dispose()  # let the checkpoint and VACUUM run with no other connection open
    conn = sqlite3.connect(path)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        text = "\n".join(conn.iterdump())
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    raw = b""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            with open(path + suffix, "rb") as f:
                raw += f.read()
    # The file's bytes, not only its live rows: a deleted row can linger in a free page.
    return text + "\n" + raw.decode("latin-1")


def _limiter_keys_for(hash_: str) -> list[str]:
    if REDIS:
        import redis

        return [k.decode() for k in redis.Redis.from_url(REDIS).scan_iter(match=f"*{hash_}*")]
    return [k for k in get_limiter()._counts if hash_ in k]  # type: ignore[attr-defined]


def test_erasure_leaves_no_trace_in_the_database_or_the_logs(client, smtp, session, caplog):
    caplog.set_level(logging.DEBUG)
    redacted = io.StringIO()
    handler = logging.StreamHandler(redacted)
    handler.addFilter(RedactingFilter())
    logging.getLogger().addHandler(handler)
    try:
        # A full life: sign-up, confirmation, a theme change, updates sent, a download...
        sub = active_subscriber(client, smtp, session, ADDRESS, ["healthy-minds"])
        key_hash = address_hash(normalise(ADDRESS).key)
        client.post(_path(links.url_for(Purpose.MANAGE, sub)), json={"themes": ["healthy-places"]})
        add_delivery(session, sub.id, subject="Sent", status=DeliveryStatus.SENT, sent_at=utcnow())
        add_delivery(session, sub.id, subject="Queued")
        client.get(f"/my-data/{links.token_for(Purpose.EXPORT, sub)}")
        assert LOCAL_PART in _database_dump().lower()  # the dump does see the address

        # ...then the erasure request form, the emailed link, its page and its button.
        assert client.get("/erasure-requests").status_code == 200
        mail = next_mail(
            smtp, lambda: client.post("/erasure-requests", data={"email": ADDRESS.upper()})
        )
        assert mail.to == ["Zqxv-Erasure-7781@example.org"]
        erase_link = only_link(mail, "erase")
        drain_worker()  # the notice is deleted from the outbox just after the relay took it
        client.cookies.clear()
        page = client.get(erase_link)
        assert page.status_code == 200 and "Erase my data</button>" in page.text
        assert reload(session, ADDRESS).status == SubscriberStatus.ACTIVE  # a GET changes nothing
        before = ERASURES._value.get()
        erased = client.post(erase_link)
        assert erased.status_code == 200 and "Your data is erased" in erased.text
        drain_worker()
    finally:
        logging.getLogger().removeHandler(handler)

    dump = _database_dump()
    assert "erasure_log" in dump and key_hash in dump  # the dump is real and whole
    assert LOCAL_PART not in dump.lower()
    assert "example.org" not in dump.lower().replace("updates@example.org", "")

    records = [r for r in caplog.records if not r.name.startswith(TEST_TOOLS)]
    assert records
    raw_logs = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records)
    assert LOCAL_PART not in raw_logs.lower()
    assert LOCAL_PART not in redacted.getvalue().lower()

    session.expire_all()
    assert session.exec(select(Subscriber)).all() == []
    for table in ("subscriber_theme", "consent_event", "delivery"):
        assert count(table) == 0, table
    [suppressed] = session.exec(select(Suppression)).all()
    assert suppressed.address_hash == key_hash and suppressed.reason == "erased"
    [entry] = session.exec(select(ErasureLog)).all()
    assert entry.reason == "request"
    # the subscriber, a theme, 3 consent events (requested, confirmed, changed), 2 deliveries
    assert entry.rows_deleted == 1 + 1 + 3 + 2
    assert set(ErasureLog.__table__.columns.keys()) == {"id", "erased_at", "reason", "rows_deleted"}
    assert ERASURES._value.get() == before + 1
    assert _limiter_keys_for(key_hash) == []


def test_old_links_die_with_the_erasure(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "revoked@example.org")
    old = {
        "unsubscribe": _path(links.url_for(Purpose.UNSUBSCRIBE, sub)),
        "preferences": _path(links.url_for(Purpose.MANAGE, sub)),
        "my-data": f"/my-data/{links.token_for(Purpose.EXPORT, sub)}",
        "erase": _path(links.url_for(Purpose.ERASE, sub)),
    }
    assert client.post(old["erase"]).status_code == 200
    for name, path in old.items():
        assert client.get(path).status_code == 400, name
        if name != "my-data":  # a GET-only route
            assert client.post(path).status_code == 400, name
        assert "This link does not work" in client.get(path).text


def test_old_links_stay_dead_when_the_same_person_signs_up_again(client, smtp, session):
    # The erased subscriber had the highest id: SQLite must not hand that id out again.
    sub = active_subscriber(client, smtp, session, "comeback@example.org")
    old_id, old_unsubscribe = sub.id, _path(links.url_for(Purpose.UNSUBSCRIBE, sub))
    assert client.post(_path(links.url_for(Purpose.ERASE, sub))).status_code == 200
    again = active_subscriber(client, smtp, session, "comeback@example.org")
    assert again.id != old_id
    assert client.post(old_unsubscribe).status_code == 400
    assert reload(session, "comeback@example.org").status.value == "active"


def test_wrong_purpose_tokens_cannot_erase(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "keep-me@example.org", ["healthy-minds"])
    wrong = [
        links.token_for(Purpose.UNSUBSCRIBE, sub),
        links.token_for(Purpose.MANAGE, sub),
        confirmation_token(sub, ["healthy-minds"]),
        links.token_for(Purpose.ERASE, sub) + "x",
    ]
    for token in wrong:
        assert client.get(f"/erase/{token}").status_code == 400
        assert client.post(f"/erase/{token}").status_code == 400
        answer = client.post(f"/erase/{token}", headers={"accept": "application/json"})
        assert answer.status_code == 400 and "detail" in answer.json()
    assert reload(session, "keep-me@example.org").status == SubscriberStatus.ACTIVE


def test_an_expired_erase_link_gets_400_and_says_so(client, smtp, session, settings_env):
    sub = active_subscriber(client, smtp, session, "slow@example.org")
    link = _path(links.url_for(Purpose.ERASE, sub))
    settings_env(erase_max_age_days=-1)
    answer = client.post(link)
    assert answer.status_code == 400 and "expired" in answer.text
    assert reload(session, "slow@example.org").status == SubscriberStatus.ACTIVE


def test_erasure_request_answers_the_same_for_any_address(client, smtp, session):
    active_subscriber(client, smtp, session, "known@example.org")
    drain_worker()
    sent_before = len(smtp.outbox.messages())
    known = client.post("/erasure-requests", json={"email": "known@example.org"})
    unknown = client.post("/erasure-requests", json={"email": "stranger@example.org"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    form_known = client.post("/erasure-requests", data={"email": "known@example.org"})
    form_unknown = client.post("/erasure-requests", data={"email": "stranger@example.org"})
    assert form_known.status_code == form_unknown.status_code == 202
    assert form_known.text.replace(form_known.headers["x-request-id"], "") == (
        form_unknown.text.replace(form_unknown.headers["x-request-id"], "")
    )
    assert "Check your email" in form_known.text
    drain_worker()
    mails = smtp.outbox.messages()[sent_before:]
    assert [m.to for m in mails] == [["known@example.org"], ["known@example.org"]]
    assert count("subscriber") == 1


def test_erasure_requests_are_capped_per_address_and_checked(client, smtp, session, settings_env):
    active_subscriber(client, smtp, session, "capped@example.org")
    settings_env(confirmations_per_address_per_hour=1)
    drain_worker()
    sent_before = len(smtp.outbox.messages())
    for _ in range(3):
        assert (
            client.post("/erasure-requests", json={"email": "capped@example.org"}).status_code
            == 202
        )
    honeypot = client.post(
        "/erasure-requests", data={"email": "capped@example.org", "website": "x"}
    )
    assert honeypot.status_code == 202
    drain_worker()
    assert len(smtp.outbox.messages()) == sent_before + 1
    for bad in ({"email": "not-an-address"}, {"email": ""}, {}, {"email": ["a@b.org"]}):
        assert client.post("/erasure-requests", json=bad).status_code == 422, bad
    page = client.post("/erasure-requests", data={"email": "nope"})
    assert page.status_code == 422 and "There is a problem" in page.text


def test_tasks_queued_before_an_erasure_find_nothing_and_send_nothing(client, smtp, session):
    from mailing.mail import outbox
    from workers.enqueue import publish_notice
    from workers.tasks import send_notice

    sub = active_subscriber(client, smtp, session, "queued@example.org")
    queued = [
        outbox.queue(session, sub.id, NoticeKind.ERASE_LINK),
        outbox.queue(session, sub.id, NoticeKind.CONFIRM, ["healthy-minds"]),
        outbox.queue(session, sub.id, NoticeKind.ALREADY_SUBSCRIBED),
    ]
    session.commit()
    assert client.post(_path(links.url_for(Purpose.ERASE, sub))).status_code == 200
    drain_worker()
    assert count("notice") == 0  # erased with the subscriber
    sent_before = len(smtp.outbox.messages())
    for notice_id in queued:
        publish_notice(notice_id)
    drain_worker()
    assert len(smtp.outbox.messages()) == sent_before
    assert all(send_notice.run(notice_id) is False for notice_id in queued)


def test_signing_up_again_after_erasure_needs_a_fresh_confirmation(
    client, smtp, session, settings_env
):
    settings_env(confirmations_per_address_per_hour=1)
    sub = active_subscriber(client, smtp, session, "return@example.org", ["healthy-minds"])
    key = normalise("return@example.org").key
    assert client.post(_path(links.url_for(Purpose.ERASE, sub))).status_code == 200
    assert is_suppressed(session, key)

    # The per-address cap was used up by the first sign-up; erasure forgot it with the rest.
    mail = next_mail(smtp, lambda: subscribe(client, "return@example.org", ["healthy-living"]))
    assert mail.to == ["return@example.org"]
    again = reload(session, "return@example.org")
    assert again.status == SubscriberStatus.PENDING
    assert is_suppressed(session, key)  # until they confirm, only the confirmation goes to them
    export = client.get(f"/my-data/{links.token_for(Purpose.EXPORT, again)}").json()
    assert export["subscriber"]["on_suppression_list"] is True
    drain_worker()
    sent = len(smtp.outbox.messages())
    assert client.post("/erasure-requests", json={"email": "return@example.org"}).status_code == 202
    drain_worker()
    assert len(smtp.outbox.messages()) == sent  # not even an erase link

    assert client.post(only_link(mail, "confirm")).status_code == 200
    again = reload(session, "return@example.org")
    assert again.status == SubscriberStatus.ACTIVE
    assert not is_suppressed(session, key)
    assert session.exec(select(Suppression)).all() == []


@pytest.mark.parametrize("status", ["pending", "unsubscribed"])
def test_anyone_we_hold_data_about_can_erase_it(client, smtp, session, status):
    email = f"{status}-erase@example.org"
    if status == "pending":
        mail = next_mail(smtp, lambda: subscribe(client, email))
        assert only_link(mail, "confirm")
    else:
        sub = active_subscriber(client, smtp, session, email)
        client.post(_path(links.url_for(Purpose.UNSUBSCRIBE, sub)))
    mail = next_mail(smtp, lambda: client.post("/erasure-requests", json={"email": email}))
    answer = client.post(only_link(mail, "erase"), headers={"accept": "application/json"})
    assert answer.status_code == 200 and answer.json() == {"status": "erased"}
    assert count("subscriber") == 0 and count("consent_event") == 0
