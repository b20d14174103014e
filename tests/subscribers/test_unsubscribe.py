"""One-click unsubscribe (RFC 8058): exactly as a mailbox provider sends it, at once, repeatable."""

from __future__ import annotations

import pytest
from sqlmodel import select

from mailing.metrics import UNSUBSCRIBES
from mailing.models import ConsentEvent, Delivery
from mailing.states import ConsentEventKind, DeliveryStatus, SubscriberStatus
from mailing.subscribers import links
from mailing.subscribers.signup import confirmation_token
from mailing.subscribers.tokens import Purpose
from tests.support.helpers import count
from tests.support.selfservice import active_subscriber, add_delivery, management_links, reload

ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


def _withdrawals(session, subscriber_id):
    session.expire_all()
    return session.exec(
        select(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber_id)
        .where(ConsentEvent.kind == ConsentEventKind.WITHDRAWN)
    ).all()


def _assert_plain_200(answer):
    assert answer.status_code == 200
    assert "location" not in answer.headers
    assert "set-cookie" not in answer.headers


def test_one_click_post_exactly_as_a_mailbox_provider_sends_it(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "oneclick@example.org")
    link = management_links(client, smtp, "oneclick@example.org")["unsubscribe"]
    before = UNSUBSCRIBES._value.get()
    client.cookies.clear()

    answer = client.post(
        link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK, follow_redirects=False
    )

    _assert_plain_200(answer)
    assert "referer" not in answer.request.headers and "cookie" not in answer.request.headers
    sub = reload(session, "oneclick@example.org")
    assert sub.status == SubscriberStatus.UNSUBSCRIBED
    assert sub.unsubscribed_at is not None
    [event] = _withdrawals(session, sub.id)
    assert event.channel == "one-click"
    assert event.consent_text_sha256 is None  # a withdrawal shows no consent wording
    assert UNSUBSCRIBES._value.get() == before + 1


def test_one_click_with_an_empty_body(client, smtp, session):
    active_subscriber(client, smtp, session, "empty@example.org")
    link = management_links(client, smtp, "empty@example.org")["unsubscribe"]
    client.cookies.clear()
    _assert_plain_200(client.post(link, follow_redirects=False))
    assert reload(session, "empty@example.org").status == SubscriberStatus.UNSUBSCRIBED


def test_unsubscribing_again_changes_nothing_and_still_answers_200(client, smtp, session):
    active_subscriber(client, smtp, session, "again@example.org")
    link = management_links(client, smtp, "again@example.org")["unsubscribe"]
    _assert_plain_200(client.post(link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK))
    first = reload(session, "again@example.org")
    for _ in range(3):
        _assert_plain_200(
            client.post(link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
        )
    _assert_plain_200(client.post(link))
    again = reload(session, "again@example.org")
    assert again.status == SubscriberStatus.UNSUBSCRIBED
    assert again.unsubscribed_at == first.unsubscribed_at
    assert len(_withdrawals(session, again.id)) == 1


def test_get_shows_a_button_and_offers_themes_instead_changing_nothing(client, smtp, session):
    active_subscriber(client, smtp, session, "looker@example.org")
    link = management_links(client, smtp, "looker@example.org")["unsubscribe"]
    for _ in range(2):  # mail scanners follow links
        page = client.get(link)
        assert page.status_code == 200
        assert '<form method="post">' in page.text and "Unsubscribe</button>" in page.text
        assert 'href="http://testserver/preferences/' in page.text
    assert reload(session, "looker@example.org").status == SubscriberStatus.ACTIVE


def test_the_page_button_unsubscribes_and_records_the_email_link(client, smtp, session):
    active_subscriber(client, smtp, session, "button@example.org")
    link = management_links(client, smtp, "button@example.org")["unsubscribe"]
    answer = client.post(link, data={"via": "page"})
    _assert_plain_200(answer)
    assert "You are unsubscribed" in answer.text
    sub = reload(session, "button@example.org")
    [event] = _withdrawals(session, sub.id)
    assert event.channel == "email-link"


def test_a_delivery_queued_before_the_unsubscribe_is_cancelled(client, smtp, session):
    """Unsubscribe during a send: what is still pending for them never goes out."""
    sub = active_subscriber(client, smtp, session, "midsend@example.org")
    other = active_subscriber(client, smtp, session, "bystander@example.org")
    pending = add_delivery(session, sub.id, subject="Being sent now")
    already = add_delivery(session, sub.id, subject="Sent last week", status=DeliveryStatus.SENT)
    theirs = add_delivery(session, other.id, subject="Being sent now")
    link = links.url_for(Purpose.UNSUBSCRIBE, sub).removeprefix("http://testserver")

    _assert_plain_200(client.post(link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK))

    session.expire_all()
    assert session.get(Delivery, pending.id).status == DeliveryStatus.CANCELLED
    assert session.get(Delivery, already.id).status == DeliveryStatus.SENT
    assert session.get(Delivery, theirs.id).status == DeliveryStatus.PENDING
    assert count("delivery", "WHERE status = 'pending'") == 1


def test_one_click_is_not_refused_by_the_per_ip_limit(client, smtp, session, settings_env):
    """A mailbox provider sends many people's unsubscribes from one address: none is refused."""
    emails = [f"provider{i}@example.org" for i in range(4)]
    unsubscribe_links = []
    for email in emails:
        sub = active_subscriber(client, smtp, session, email)
        unsubscribe_links.append(links.url_for(Purpose.UNSUBSCRIBE, sub))
    settings_env(rate_limit_per_ip=2)
    for link in unsubscribe_links:
        _assert_plain_200(
            client.post(link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
        )
    assert count("subscriber", "WHERE status = 'unsubscribed'") == 4
    # ...while the limit does apply to the other public POSTs.
    answers = [client.post("/erasure-requests", json={"email": "x@example.org"}) for _ in range(3)]
    assert answers[-1].status_code == 429


@pytest.mark.parametrize("method", ["get", "post"])
def test_wrong_purpose_and_forged_tokens_get_400(client, smtp, session, method):
    sub = active_subscriber(client, smtp, session, "wrong@example.org", ["healthy-minds"])
    wrong = [
        confirmation_token(sub, ["healthy-minds"]),
        links.token_for(Purpose.MANAGE, sub),
        links.token_for(Purpose.ERASE, sub),
        links.token_for(Purpose.UNSUBSCRIBE, sub)[:-3] + "xyz",
        "not-a-token",
    ]
    for token in wrong:
        answer = getattr(client, method)(f"/unsubscribe/{token}")
        assert answer.status_code == 400, token
        assert "This link does not work" in answer.text
    answer = client.post(f"/unsubscribe/{wrong[0]}", headers={"accept": "application/json"})
    assert answer.status_code == 400 and "detail" in answer.json()
    assert reload(session, "wrong@example.org").status == SubscriberStatus.ACTIVE
