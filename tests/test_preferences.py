"""Preferences: change themes from the emailed link (JSON or form); none chosen is unsubscribing."""

from __future__ import annotations

import re

from sqlmodel import select

from mailing import links
from mailing.consent import CONSENT
from mailing.models import ConsentEvent
from mailing.states import ConsentEventKind, SubscriberStatus
from mailing.subscribers import themes_of
from mailing.tokens import Purpose
from tests.helpers import table_snapshot
from tests.selfservice_support import active_subscriber, management_links, reload


def _events(session, subscriber_id, kind):
    session.expire_all()
    return session.exec(
        select(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber_id)
        .where(ConsentEvent.kind == kind)
    ).all()


def _path(url):
    return url.removeprefix("http://testserver")


def test_page_from_the_email_shows_themes_and_every_link_works(client, smtp, session):
    active_subscriber(client, smtp, session, "prefs@example.org", ["healthy-minds"])
    link = management_links(client, smtp, "prefs@example.org")["preferences"]
    client.cookies.clear()
    page = client.get(link)
    assert page.status_code == 200
    assert re.search(r'value="healthy-minds"\s+checked', page.text)
    assert not re.search(r'value="healthy-places"\s+checked', page.text)
    found = dict(
        re.findall(r'href="http://testserver/(my-data|unsubscribe|erase)/([^"]+)"', page.text)
    )
    assert set(found) == {"my-data", "unsubscribe", "erase"}
    assert client.get(f"/my-data/{found['my-data']}").json()["subscriber"]["email"]
    assert 'download="my-data.json"' in page.text
    assert client.get(f"/unsubscribe/{found['unsubscribe']}").status_code == 200
    assert client.get(f"/erase/{found['erase']}").status_code == 200
    assert reload(session, "prefs@example.org").status == SubscriberStatus.ACTIVE


def test_json_change_sets_themes_and_records_a_changed_event(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "json-prefs@example.org", ["healthy-minds"])
    link = _path(links.url_for(Purpose.MANAGE, sub))
    answer = client.post(link, json={"themes": ["healthy-living", "healthy-children"]})
    assert answer.status_code == 200
    assert answer.json() == {"status": "active", "themes": ["healthy-children", "healthy-living"]}
    assert themes_of(session, sub.id) == ["healthy-children", "healthy-living"]
    [event] = _events(session, sub.id, ConsentEventKind.CHANGED)
    assert event.themes == "healthy-children,healthy-living"
    assert event.channel == "api"
    assert event.consent_text_sha256 == CONSENT.sha256


def test_form_change_saves_and_says_so(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "form-prefs@example.org", ["healthy-minds"])
    link = _path(links.url_for(Purpose.MANAGE, sub))
    answer = client.post(link, data={"action": "save", "themes": ["healthy-places"]})
    assert answer.status_code == 200
    assert "Your choices are saved" in answer.text and "Healthy Places" in answer.text
    assert themes_of(session, sub.id) == ["healthy-places"]
    [event] = _events(session, sub.id, ConsentEventKind.CHANGED)
    assert event.channel == "email-link"


def test_saving_the_same_themes_records_nothing_new(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "same@example.org", ["healthy-minds"])
    link = _path(links.url_for(Purpose.MANAGE, sub))
    assert client.post(link, json={"themes": ["healthy-minds"]}).status_code == 200
    assert _events(session, sub.id, ConsentEventKind.CHANGED) == []


def test_no_themes_in_json_is_unsubscribing(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "none-json@example.org")
    link = _path(links.url_for(Purpose.MANAGE, sub))
    answer = client.post(link, json={"themes": []})
    assert answer.status_code == 200
    assert answer.json() == {"status": "unsubscribed", "themes": []}
    assert reload(session, "none-json@example.org").status == SubscriberStatus.UNSUBSCRIBED
    assert len(_events(session, sub.id, ConsentEventKind.WITHDRAWN)) == 1


def test_no_themes_ticked_in_the_form_unsubscribes_and_the_page_says_so(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "none-form@example.org")
    link = _path(links.url_for(Purpose.MANAGE, sub))
    assert "If you choose none, we will unsubscribe" in client.get(link).text
    answer = client.post(link, data={"action": "save"})
    assert answer.status_code == 200
    assert "You chose no themes, so we have unsubscribed you" in answer.text
    assert reload(session, "none-form@example.org").status == SubscriberStatus.UNSUBSCRIBED


def test_bad_input_is_422_and_changes_nothing(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "bad-prefs@example.org", ["healthy-minds"])
    link = _path(links.url_for(Purpose.MANAGE, sub))
    before = table_snapshot()
    bad = [
        {"json": {"themes": ["healthy-minds", "cheap-loans"]}},
        {"json": {}},  # an empty body must not unsubscribe anyone
        {"json": ["healthy-minds"]},
        {"json": {"themes": [1, 2]}},
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"data": {"themes": ["healthy-minds"]}},  # the form always says "save"
        {"data": {"action": "save", "themes": ["nope"]}},
    ]
    for kwargs in bad:
        answer = client.post(link, **kwargs)
        assert answer.status_code in (415, 422), (kwargs, answer.status_code)
    assert (
        client.post(link, content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    )
    assert table_snapshot() == before
    assert themes_of(session, sub.id) == ["healthy-minds"]
    assert reload(session, "bad-prefs@example.org").status == SubscriberStatus.ACTIVE


def test_only_an_active_subscription_can_change_themes(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "gone@example.org", ["healthy-minds"])
    link = _path(links.url_for(Purpose.MANAGE, sub))
    client.post(link, json={"themes": []})
    answer = client.post(link, json={"themes": ["healthy-places"]})
    assert answer.status_code == 409
    assert "unsubscribed" in answer.json()["detail"]
    page = client.post(link, data={"action": "save", "themes": ["healthy-places"]})
    assert page.status_code == 409 and "sign up again" in page.text
    assert "You are unsubscribed" in client.get(link).text
    assert reload(session, "gone@example.org").status == SubscriberStatus.UNSUBSCRIBED
    assert _events(session, sub.id, ConsentEventKind.CHANGED) == []


def test_wrong_purpose_tokens_get_400(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "wrong-prefs@example.org")
    for purpose in (Purpose.UNSUBSCRIBE, Purpose.ERASE, Purpose.CONFIRM):
        token = links.token_for(purpose, sub)
        assert client.get(f"/preferences/{token}").status_code == 400
        assert client.post(f"/preferences/{token}", json={"themes": []}).status_code == 400
        assert client.get(f"/my-data/{token}").status_code == 400
    assert reload(session, "wrong-prefs@example.org").status == SubscriberStatus.ACTIVE
