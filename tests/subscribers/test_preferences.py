"""Preferences: change themes from the emailed link (JSON or form); none chosen is unsubscribing."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select

from mailing.models import ConsentEvent
from mailing.states import ConsentEventKind, SubscriberStatus
from mailing.subscribers import links
from mailing.subscribers.consent import CONSENT
from mailing.subscribers.records import themes_of
from mailing.subscribers.tokens import Purpose
from tests.conftest import drain_worker
from tests.support.helpers import only_link, table_snapshot
from tests.support.selfservice import active_subscriber, management_links, next_mail, reload


def _events(session, subscriber_id, kind):
    session.expire_all()
    return session.exec(
        select(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber_id)
        .where(ConsentEvent.kind == kind)
    ).all()


def _path(url):
    return url.removeprefix("http://testserver")


def test_page_from_the_email_shows_themes_and_holds_no_data_or_erase_link(client, smtp, session):
    active_subscriber(client, smtp, session, "prefs@example.org", ["healthy-minds"])
    link = management_links(client, smtp, "prefs@example.org")["preferences"]
    client.cookies.clear()
    page = client.get(link)
    assert page.status_code == 200
    assert re.search(r'value="healthy-minds"\s+checked', page.text)
    assert not re.search(r'value="healthy-places"\s+checked', page.text)
    found = re.findall(r'href="http://testserver/([a-z-]+)/[^"]+"', page.text)
    assert found == ["unsubscribe"]  # a forwarded email opens neither the data nor the erasure
    assert "/my-data/" not in page.text and "/erase/" not in page.text
    for action in ("export", "erase"):
        assert re.search(rf'name="action" value="{action}"', page.text)
    assert reload(session, "prefs@example.org").status == SubscriberStatus.ACTIVE


@pytest.mark.parametrize("action", ["export", "erase"])
def test_the_pages_buttons_email_a_link_to_the_subscribers_own_address(
    client, smtp, session, action
):
    active_subscriber(client, smtp, session, "own@example.org", ["healthy-minds"])
    link = management_links(client, smtp, "own@example.org")["preferences"]
    path = {"export": "my-data", "erase": "erase"}[action]
    answer = None

    def press():
        nonlocal answer
        answer = client.post(link, data={"action": action})

    mail = next_mail(smtp, press)
    assert answer.status_code == 202 and "Check your email" in answer.text
    assert f"/{path}/" not in answer.text
    assert mail.to == ["own@example.org"]
    emailed = only_link(mail, path)
    assert client.get(emailed).status_code == 200
    assert reload(session, "own@example.org").status == SubscriberStatus.ACTIVE


@pytest.mark.parametrize("action", ["export", "erase"])
def test_json_action_answers_202_and_emails_the_link(client, smtp, session, action):
    sub = active_subscriber(client, smtp, session, f"json-{action}@example.org")
    link = _path(links.url_for(Purpose.MANAGE, sub))
    answer = None

    def ask():
        nonlocal answer
        answer = client.post(link, json={"action": action})

    mail = next_mail(smtp, ask)
    assert answer.status_code == 202 and answer.json() == {"status": "accepted"}
    assert mail.to == [f"json-{action}@example.org"]
    assert only_link(mail, {"export": "my-data", "erase": "erase"}[action])


def test_emailed_links_are_capped_per_address_and_bad_actions_get_422(
    client, smtp, session, settings_env
):
    sub = active_subscriber(client, smtp, session, "often@example.org")
    link = _path(links.url_for(Purpose.MANAGE, sub))
    settings_env(confirmations_per_address_per_hour=2)
    drain_worker()
    sent_before = len(smtp.outbox.messages())
    for _ in range(4):
        assert client.post(link, json={"action": "export"}).status_code == 202
    drain_worker()
    assert len(smtp.outbox.messages()) == sent_before + 2
    before = table_snapshot()
    for bad in ({"action": "delete"}, {"action": ["export"]}, {"action": ""}):
        answer = client.post(link, json=bad)
        assert answer.status_code == 422, bad
        assert answer.json()["detail"][0]["loc"] == ["body", "action"]
    assert client.post(link, data={"action": "nonsense"}).status_code == 422
    drain_worker()
    assert len(smtp.outbox.messages()) == sent_before + 2
    assert table_snapshot() == before


def test_a_manage_token_does_not_open_the_data(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "manage-only@example.org")
    token = links.token_for(Purpose.MANAGE, sub)
    assert client.get(f"/my-data/{token}").status_code == 400
    assert client.get(f"/erase/{token}").status_code == 400


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


def test_the_unsubscribe_pages_hold_no_data_or_erase_link(client, smtp, session):
    sub = active_subscriber(client, smtp, session, "leaving@example.org")
    link = links.url_for(Purpose.UNSUBSCRIBE, sub).removeprefix("http://testserver")
    pages = [client.get(link), client.post(link, data={"via": "page"}), client.get(link)]
    prefs = _path(links.url_for(Purpose.MANAGE, sub))
    pages.append(client.get(prefs))  # unsubscribed now: the page still offers emailed links
    for page in pages:
        assert page.status_code == 200
        assert "/my-data/" not in page.text and "/erase/" not in page.text
    assert "your subscription page" in pages[1].text
    assert re.search(r'name="action" value="erase"', pages[3].text)
