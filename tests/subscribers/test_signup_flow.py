"""The whole sign-up, from the form to an active subscription, on a real worker and SMTP server."""

from __future__ import annotations

from email import message_from_bytes, policy

import sqlalchemy as sa
from markupsafe import escape
from sqlmodel import select

from mailing.db import get_engine
from mailing.models import ConsentEvent, ConsentText, Subscriber
from mailing.states import ConsentEventKind, SubscriberStatus
from mailing.subscribers.records import themes_of
from tests.support.helpers import count, only_link, subscribe


def test_form_to_active_subscription(client, smtp, session):
    page = client.get("/")
    assert page.status_code == 200
    assert 'name="themes"' in page.text and "<fieldset" in page.text

    answer = client.post(
        "/subscriptions",
        data={
            "email": "Resident.One@Example.ORG",
            "themes": ["healthy-minds", "healthy-places"],
            "consent": "yes",
            "website": "",
            "source": "https://www.london.gov.uk/health",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/check-your-email"
    assert client.get(answer.headers["location"]).status_code == 200

    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["Resident.One@example.org"]
    link = only_link(mail, "confirm")

    assert client.get(link).status_code == 200
    sub = session.exec(select(Subscriber)).one()
    assert sub.status == SubscriberStatus.PENDING

    confirmed = client.post(link)
    assert confirmed.status_code == 200
    assert "You are subscribed" in confirmed.text
    session.expire_all()
    sub = session.exec(select(Subscriber)).one()
    assert sub.status == SubscriberStatus.ACTIVE
    assert sub.confirmed_at is not None
    assert themes_of(session, sub.id) == ["healthy-minds", "healthy-places"]


def test_json_signup_and_json_confirmation(client, smtp, session):
    assert subscribe(client, "json@example.org", ["healthy-living"]).json() == {"status": "pending"}
    [mail] = smtp.outbox.wait_for(1)
    answer = client.post(only_link(mail, "confirm"), headers={"accept": "application/json"})
    assert answer.status_code == 200
    assert answer.json()["status"] == "active"


def test_no_themes_means_all_five(client, smtp, session):
    subscribe(client, "all@example.org")
    [mail] = smtp.outbox.wait_for(1)
    client.post(only_link(mail, "confirm"))
    sub = session.exec(select(Subscriber)).one()
    assert len(themes_of(session, sub.id)) == 5


def test_get_does_not_confirm(client, smtp, session):
    subscribe(client, "scanner@example.org")
    [mail] = smtp.outbox.wait_for(1)
    link = only_link(mail, "confirm")
    for _ in range(3):
        assert client.get(link).status_code == 200
    assert session.exec(select(Subscriber)).one().status == SubscriberStatus.PENDING
    assert count("consent_event", "WHERE kind = 'confirmed'") == 0


def test_confirming_twice_is_harmless(client, smtp, session):
    subscribe(client, "twice@example.org")
    [mail] = smtp.outbox.wait_for(1)
    link = only_link(mail, "confirm")
    assert client.post(link).status_code == 200
    assert client.post(link).status_code == 200
    assert count("consent_event", "WHERE kind = 'confirmed'") == 1


def test_consent_ledger_records_what_was_shown(client, smtp, session):
    client.post(
        "/subscriptions",
        data={
            "email": "ledger@example.org",
            "themes": ["healthy-children"],
            "consent": "yes",
            "source": "https://www.london.gov.uk/programmes-strategies/health",
        },
    )
    [mail] = smtp.outbox.wait_for(1)
    client.post(only_link(mail, "confirm"))
    events = session.exec(select(ConsentEvent).order_by(ConsentEvent.id)).all()
    assert [e.kind for e in events] == [ConsentEventKind.REQUESTED, ConsentEventKind.CONFIRMED]
    requested = events[0]
    assert requested.channel == "form"
    assert requested.source == "https://www.london.gov.uk/programmes-strategies/health"
    assert requested.themes == "healthy-children"
    shown = session.get(ConsentText, requested.consent_text_sha256)
    assert shown is not None and str(escape(shown.text)) in client.get("/").text
    notice = session.get(ConsentText, requested.privacy_notice_sha256)
    assert "third parties" in notice.text


def test_every_email_is_multipart_alternative_with_standard_headers(client, smtp):
    subscribe(client, "headers@example.org")
    [mail] = smtp.outbox.wait_for(1)
    msg = message_from_bytes(mail.raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    for header in ("From", "To", "Date", "Message-ID", "Subject"):
        assert msg[header], header
    assert msg["From"].addresses[0].addr_spec == "updates@example.org"


def test_simultaneous_signups_for_one_new_address_make_one_subscriber(database):
    """The unique key decides the race: every request is recorded, against a single row."""
    import threading

    from mailing.db import session_scope
    from mailing.subscribers.addresses import normalise
    from mailing.subscribers.signup import request_subscription

    address = normalise("Racing.Person@Example.NET")
    start = threading.Barrier(6)
    answers: list[object] = []
    failures: list[BaseException] = []

    def sign_up(themes: list[str]) -> None:
        try:
            start.wait(timeout=10)
            with session_scope() as s:
                answers.append(request_subscription(s, address, themes, channel="api", source=None))
        except BaseException as exc:  # reported below, so a failing thread fails the test
            failures.append(exc)

    threads = [
        threading.Thread(target=sign_up, args=([theme],))
        for theme in ["healthy-minds", "healthy-places"] * 3
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert failures == []
    assert count("subscriber") == 1
    assert count("consent_event", "WHERE kind = 'requested'") == 6
    # A pending subscriber's themes follow one of the requests, never a mixture of none.
    assert count("subscriber_theme") == 1
    # The requests under the hourly cap queued an email (a notice row), all for that subscriber.
    assert count("notice") == len([a for a in answers if a is not None]) >= 1
    with get_engine().connect() as conn:
        owners = conn.execute(sa.text("SELECT DISTINCT subscriber_id FROM notice")).all()
    assert len(owners) == 1


def test_more_simultaneous_signups_than_a_batch_all_land(client, smtp):
    """Requests beyond the batches being written wait their turn on the event loop, and go in
    later batches; none is lost, each gets its own email."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from mailing.web.signup_batch import SignupBatcher

    n = SignupBatcher.MAX_BATCH * SignupBatcher.WRITERS + 7

    async def sign_up_all() -> list[int]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/subscriptions",
                        json={"email": f"crowd{i}@example.org", "themes": [], "consent": True},
                    )
                    for i in range(n)
                )
            )
        return [a.status_code for a in answers]

    # In a thread of its own: the browser tests' Playwright may own this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        statuses = pool.submit(asyncio.run, sign_up_all()).result(timeout=60)
    assert statuses == [202] * n
    assert count("subscriber", "WHERE status = 'pending'") == n
    assert len(smtp.outbox.wait_for(n)) == n
