"""Every link route answers a bad link the same way, from one mapping (mailing/web/errors.py):
the 400 page naming the problem, or `{"detail"}` with the same words for a caller that wants
JSON; a not-active subscription's change is the 409 page or JSON."""

from __future__ import annotations

import pytest

from mailing.errors import LINK_PROBLEM_TEXT, LinkProblem
from mailing.subscribers import links
from mailing.subscribers.tokens import Purpose
from tests.support.helpers import only_link, subscribe
from tests.support.selfservice import active_subscriber, management_links

JSON = {"accept": "application/json"}
LINK_ROUTES = [
    ("get", "/confirm/{}"),
    ("post", "/confirm/{}"),
    ("get", "/unsubscribe/{}"),
    ("post", "/unsubscribe/{}"),
    ("get", "/preferences/{}"),
    ("post", "/preferences/{}"),
    ("get", "/my-data/{}"),
    ("get", "/erase/{}"),
    ("post", "/erase/{}"),
]


@pytest.mark.parametrize(("method", "path"), LINK_ROUTES)
def test_a_forged_link_is_the_same_400_on_every_route(client, method, path):
    url = path.format("eyJzIjoxfQ.forged")
    page = getattr(client, method)(url)
    assert page.status_code == 400 and "This link does not work" in page.text
    assert "This link is not valid." in page.text
    answer = getattr(client, method)(url, headers=JSON)
    assert answer.status_code == 400
    assert answer.json() == {"detail": LINK_PROBLEM_TEXT[LinkProblem.INVALID]}


def test_an_expired_link_says_expired_alike_for_confirm_and_erase(
    client, smtp, session, settings_env
):
    sub = active_subscriber(client, smtp, session, "late@example.org")
    erase = links.url_for(Purpose.ERASE, sub).split("testserver", 1)[-1]
    subscribe(client, "pending@example.org")
    confirm = only_link(smtp.outbox.wait_for(3)[-1], "confirm")
    settings_env(erase_max_age_days=-1, confirm_max_age_days=-1)
    expired = LINK_PROBLEM_TEXT[LinkProblem.EXPIRED]
    for url in (confirm, erase):
        answer = client.post(url, headers=JSON)
        assert (answer.status_code, answer.json()) == (400, {"detail": expired}), url
        page = client.post(url)
        assert page.status_code == 400 and expired in page.text


def test_a_change_to_an_unsubscribed_subscription_is_409_json_or_page(client, smtp, session):
    active_subscriber(client, smtp, session, "gone@example.org")
    found = management_links(client, smtp, "gone@example.org")
    assert client.post(found["unsubscribe"]).status_code == 200
    answer = client.post(found["preferences"], json={"themes": ["healthy-minds"]})
    assert answer.status_code == 409
    assert answer.json() == {"detail": "The subscription is unsubscribed: no themes to change."}
    page = client.post(found["preferences"], data={"themes": ["healthy-minds"], "action": "save"})
    assert page.status_code == 409 and "sign up again" in page.text
    assert found["preferences"].split("testserver", 1)[-1] in page.text
