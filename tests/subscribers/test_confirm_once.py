"""A confirmation link works once: after an unsubscribe, replaying it brings nobody back; only a
new sign-up and its new confirmation link do."""

from __future__ import annotations

from mailing.states import SubscriberStatus
from mailing.subscribers import links
from mailing.subscribers.records import link_check
from mailing.subscribers.tokens import Purpose, sign
from tests.support.helpers import count, only_link, subscribe
from tests.support.selfservice import next_mail, reload


def _unsubscribe(client, session, email):
    sub = reload(session, email)
    path = links.url_for(Purpose.UNSUBSCRIBE, sub).removeprefix("http://testserver")
    assert client.post(path).status_code == 200
    assert reload(session, email).status == SubscriberStatus.UNSUBSCRIBED


def test_a_used_confirmation_link_does_not_resubscribe_after_unsubscribing(client, smtp, session):
    first = only_link(next_mail(smtp, lambda: subscribe(client, "replay@example.org")), "confirm")
    assert client.post(first).status_code == 200
    _unsubscribe(client, session, "replay@example.org")
    events = count("consent_event")

    page = client.get(first)
    assert page.status_code == 400 and "already been used" in page.text
    replayed = client.post(first)
    assert replayed.status_code == 400 and "already been used" in replayed.text
    answer = client.post(first, headers={"accept": "application/json"})
    assert answer.status_code == 400 and "detail" in answer.json()
    assert reload(session, "replay@example.org").status == SubscriberStatus.UNSUBSCRIBED
    assert count("consent_event") == events


def test_a_new_sign_up_and_its_new_link_bring_them_back_once(client, smtp, session):
    first = only_link(next_mail(smtp, lambda: subscribe(client, "again@example.org")), "confirm")
    assert client.post(first).status_code == 200
    _unsubscribe(client, session, "again@example.org")

    second = only_link(next_mail(smtp, lambda: subscribe(client, "again@example.org")), "confirm")
    assert client.post(first).status_code == 400  # the old link is still dead
    assert client.get(second).status_code == 200
    assert client.post(second).status_code == 200
    assert reload(session, "again@example.org").status == SubscriberStatus.ACTIVE
    assert client.post(second).status_code == 200  # a second click while subscribed: harmless

    _unsubscribe(client, session, "again@example.org")
    assert client.post(second).status_code == 400
    assert client.post(first).status_code == 400
    assert reload(session, "again@example.org").status == SubscriberStatus.UNSUBSCRIBED


def test_two_links_from_two_requests_each_work_until_one_is_used(client, smtp, session):
    one = only_link(next_mail(smtp, lambda: subscribe(client, "twice@example.org")), "confirm")
    two = only_link(
        next_mail(smtp, lambda: subscribe(client, "twice@example.org", ["healthy-minds"])),
        "confirm",
    )
    assert one != two
    assert client.post(two).status_code == 200
    _unsubscribe(client, session, "twice@example.org")
    assert client.post(one).status_code == 400
    assert reload(session, "twice@example.org").status == SubscriberStatus.UNSUBSCRIBED


def test_a_link_signed_without_the_count_cannot_resubscribe(client, smtp, session):
    # A link made before the count was signed in, or one with the count stripped, counts as 0.
    first = only_link(next_mail(smtp, lambda: subscribe(client, "legacy@example.org")), "confirm")
    assert client.post(first).status_code == 200
    _unsubscribe(client, session, "legacy@example.org")
    sub = reload(session, "legacy@example.org")
    for n in (None, 0, "1", -1, 2):
        payload = {"s": sub.id, "h": link_check(sub), "t": ["healthy-minds"]}
        if n is not None:
            payload["n"] = n
        assert client.post(f"/confirm/{sign(Purpose.CONFIRM, payload)}").status_code == 400, n
    assert reload(session, "legacy@example.org").status == SubscriberStatus.UNSUBSCRIBED
