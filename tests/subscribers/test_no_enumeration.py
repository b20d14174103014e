"""The sign-up answer never reveals whether an address is known."""

from __future__ import annotations

from email import message_from_bytes, policy

from sqlmodel import select

from mailing.models import Subscriber
from mailing.states import SubscriberStatus
from tests.conftest import drain_worker
from tests.support.helpers import links, only_link, subscribe


def _activate(client, smtp, email):
    subscribe(client, email)
    mail = smtp.outbox.wait_for(1)[-1]
    client.post(only_link(mail, "confirm"))
    drain_worker()  # the welcome email that confirming sends lands before the outbox is emptied
    smtp.outbox.clear()


def _answer(client, email):
    r = client.post("/subscriptions", json={"email": email, "consent": True})
    return (
        r.status_code,
        r.json(),
        sorted(k for k in r.headers if k not in ("x-request-id", "date")),
    )


def test_same_answer_for_new_pending_active_and_unsubscribed(client, smtp, session):
    _activate(client, smtp, "active@example.org")
    subscribe(client, "pending@example.org")
    smtp.outbox.wait_for(1)
    _activate(client, smtp, "gone@example.org")
    gone = session.exec(select(Subscriber).where(Subscriber.email_key == "gone@example.org")).one()
    gone.status = SubscriberStatus.UNSUBSCRIBED
    session.add(gone)
    session.commit()

    answers = {
        e: _answer(client, e)
        for e in (
            "new@example.org",
            "pending@example.org",
            "active@example.org",
            "gone@example.org",
        )
    }
    assert len(set(map(repr, answers.values()))) == 1, answers
    assert answers["new@example.org"][:2] == (202, {"status": "pending"})

    form = [
        client.post("/subscriptions", data={"email": e, "consent": "yes"}, follow_redirects=False)
        for e in ("new2@example.org", "active@example.org")
    ]
    assert [(f.status_code, f.headers["location"]) for f in form] == [
        (303, "/check-your-email")
    ] * 2


def test_active_address_gets_a_manage_email_of_the_same_shape(client, smtp, session):
    _activate(client, smtp, "known@example.org")
    subscribe(client, "known@example.org")
    subscribe(client, "unknown@example.org")
    mails = {m.to[0]: m for m in smtp.outbox.wait_for(2)}
    known, unknown = mails["known@example.org"], mails["unknown@example.org"]

    assert links(known, "confirm") == []
    assert links(known, "preferences") and links(known, "unsubscribe")
    assert links(unknown, "confirm")
    a = message_from_bytes(known.raw, policy=policy.default)
    b = message_from_bytes(unknown.raw, policy=policy.default)
    assert sorted(a.keys()) == sorted(b.keys())
    assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
    assert a["From"] == b["From"]


def test_a_strangers_request_never_changes_an_active_subscription(client, smtp, session):
    subscribe(client, "mine@example.org", ["healthy-minds"])
    client.post(only_link(smtp.outbox.wait_for(1)[-1], "confirm"))
    subscribe(client, "mine@example.org", ["healthy-places"])
    smtp.outbox.wait_for(2)
    from mailing.subscribers.records import themes_of

    sub = session.exec(select(Subscriber)).one()
    assert sub.status == SubscriberStatus.ACTIVE
    assert themes_of(session, sub.id) == ["healthy-minds"]


def test_identity_is_case_insensitive(client, smtp, session):
    subscribe(client, "Mixed.Case@Example.org")
    subscribe(client, "mixed.case@EXAMPLE.ORG")
    smtp.outbox.wait_for(2)
    assert len(session.exec(select(Subscriber)).all()) == 1
