"""The data download as a page a resident can read, from the same emailed link: their themes,
how often, and their consent history in words; the JSON stays (the contract), linked from it."""

from __future__ import annotations

from datetime import timedelta

from mailing.models import utcnow
from mailing.states import DeliveryStatus
from mailing.subscribers import links
from mailing.subscribers.my_data import when
from mailing.subscribers.tokens import Purpose
from tests.support.selfservice import active_subscriber, add_delivery, reload

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_a_browser_gets_the_data_in_words(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "reader@example.org", ["healthy-minds"])
    add_delivery(
        session,
        sub.id,
        subject="Parks <b>update</b>",
        status=DeliveryStatus.SENT,
        sent_at=utcnow() - timedelta(days=1),
    )
    token = links.token_for(Purpose.EXPORT, sub)

    answer = client.get(f"/my-data/{token}", headers=BROWSER)

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["cache-control"] == "no-store"
    text = answer.text
    assert "reader@example.org" in text
    assert "Healthy Minds" in text and "healthy-minds" not in text
    assert "Each update, as soon as it is sent" in text
    assert "You asked for updates on Healthy Minds through another website or app" in text
    assert "You confirmed your subscription to Healthy Minds" in text
    assert "Parks &lt;b&gt;update&lt;/b&gt;: sent" in text
    assert f'href="/my-data/{token}?format=json"' in text


def test_the_page_links_to_the_same_json(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "json@example.org")
    token = links.token_for(Purpose.EXPORT, sub)
    as_file = client.get(f"/my-data/{token}?format=json", headers=BROWSER)
    assert as_file.headers["content-type"].startswith("application/json")
    assert "attachment" in as_file.headers["content-disposition"]
    # Any client that does not ask for HTML still gets the JSON, as before.
    plain = client.get(f"/my-data/{token}")
    assert plain.headers["content-type"].startswith("application/json")
    assert plain.json()["consent_ledger"] == as_file.json()["consent_ledger"]


def test_the_history_says_what_changed(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "changer@example.org", ["healthy-minds"])
    manage = links.token_for(Purpose.MANAGE, sub)
    answer = client.post(
        f"/preferences/{manage}",
        data={"action": "save", "themes": ["healthy-places"], "frequency": "weekly"},
    )
    assert answer.status_code == 200
    sub = reload(session, "changer@example.org")
    text = client.get(f"/my-data/{links.token_for(Purpose.EXPORT, sub)}", headers=BROWSER).text
    assert "You changed your choices to Healthy Places from a link in one of our emails" in text
    assert "A weekly summary, on Saturday mornings" in text


def test_a_bad_link_gets_the_400_page(client):
    answer = client.get("/my-data/not-a-token", headers=BROWSER)
    assert answer.status_code == 400 and "<h1" in answer.text


def test_times_are_london_times():
    assert when("2026-07-01T12:00:00") == "1 July 2026, 13:00"  # summer time
    assert when("2026-12-01T12:00:00+00:00") == "1 December 2026, 12:00"


def test_the_data_page_in_production(prod, smtp, session):
    sub = active_subscriber(prod, smtp, session, "prod@example.org", ["healthy-minds"])
    answer = prod.get(f"/my-data/{links.token_for(Purpose.EXPORT, sub)}", headers=BROWSER)
    assert answer.status_code == 200 and "You confirmed your subscription" in answer.text
