"""How often: the sign-up form and API, the preferences page and API, the consent ledger and the
export; weekly subscribers are left out of each update's immediate send."""

from __future__ import annotations

import pytest

from tests.support.helpers import only_link, subscribe, table_snapshot
from tests.support.residents import confirmed
from tests.support.sending import draft, start, wait_sent

MINDS = "healthy-minds"


def _my_data(client, smtp, preferences):
    """The export, through the download link emailed on request from the preferences link."""
    from tests.support.selfservice import next_mail

    asked = next_mail(smtp, lambda: client.post(_path(preferences), json={"action": "export"}))
    answer = client.get(_path(only_link(asked, "my-data")))
    assert answer.status_code == 200
    return answer.json()


def _path(url: str) -> str:
    return url if url.startswith("/") else "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_signup_api_defaults_to_each_update(client, smtp):
    preferences = confirmed(client, smtp, "default@example.net", [MINDS])
    exported = _my_data(client, smtp, preferences)
    assert exported["subscriber"]["frequency"] == "immediate"
    assert [e["frequency"] for e in exported["consent_ledger"]] == ["immediate", "immediate"]


def test_signup_api_takes_weekly_and_the_ledger_records_it(client, smtp):
    preferences = confirmed(client, smtp, "weekly@example.net", [MINDS], frequency="weekly")
    exported = _my_data(client, smtp, preferences)
    assert exported["subscriber"]["frequency"] == "weekly"
    assert [(e["event"], e["frequency"]) for e in exported["consent_ledger"]] == [
        ("requested", "weekly"),
        ("confirmed", "weekly"),
    ]
    assert exported["weekly_summaries"] == []


@pytest.mark.parametrize("value", ["daily", "WEEKLY", 7, True, ["weekly"], {"a": 1}, "weekly\n"])
def test_signup_api_refuses_an_unknown_frequency_and_changes_nothing(client, smtp, value):
    before = table_snapshot()
    answer = subscribe(client, "x@example.net", [MINDS], frequency=value)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "frequency"]
    assert table_snapshot() == before


def test_signup_form_offers_and_takes_the_choice(client, smtp):
    page = client.get("/").text
    assert 'name="frequency" type="radio" value="weekly"' in page
    answer = client.post(
        "/subscriptions",
        data={
            "email": "form@example.net",
            "themes": [MINDS],
            "consent": "yes",
            "frequency": "weekly",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    [mail] = smtp.outbox.wait_for(1)
    assert client.post(only_link(mail, "confirm")).status_code == 200
    welcome = next(m for m in smtp.outbox.wait_for(2) if m.subject.startswith("Welcome"))
    assert "one weekly summary" in welcome.part("plain")


def test_signup_form_with_a_bad_frequency_shows_the_error(client):
    answer = client.post(
        "/subscriptions",
        data={"email": "form@example.net", "consent": "yes", "frequency": "hourly"},
    )
    assert answer.status_code == 422
    assert 'href="#frequency-immediate"' in answer.text
    assert 'value="form@example.net"' in answer.text


def test_a_stranger_cannot_change_an_active_subscribers_frequency_by_signing_up(client, smtp):
    preferences = confirmed(client, smtp, "settled@example.net", [MINDS])
    subscribe(client, "settled@example.net", [MINDS], frequency="weekly")
    [mail] = smtp.outbox.wait_for(1)
    assert mail.subject.startswith("You are already subscribed")
    assert _my_data(client, smtp, preferences)["subscriber"]["frequency"] == "immediate"


def test_preferences_json_changes_frequency_alone(client, smtp):
    preferences = confirmed(client, smtp, "switch@example.net", [MINDS])
    answer = client.post(preferences, json={"frequency": "weekly"})
    assert answer.status_code == 200
    assert answer.json() == {"status": "active", "themes": [MINDS], "frequency": "weekly"}
    exported = _my_data(client, smtp, preferences)
    assert exported["subscriber"]["frequency"] == "weekly"
    assert exported["consent_ledger"][-1]["event"] == "changed"
    assert exported["consent_ledger"][-1]["frequency"] == "weekly"


def test_preferences_json_changes_themes_and_frequency_together(client, smtp):
    preferences = confirmed(client, smtp, "both@example.net", [MINDS])
    answer = client.post(preferences, json={"themes": ["healthy-places"], "frequency": "weekly"})
    assert answer.json() == {
        "status": "active",
        "themes": ["healthy-places"],
        "frequency": "weekly",
    }


@pytest.mark.parametrize("value", ["monthly", 1, None, ["weekly"]])
def test_preferences_refuse_an_unknown_frequency_and_change_nothing(client, smtp, value):
    preferences = confirmed(client, smtp, "bad@example.net", [MINDS])
    before = table_snapshot()
    answer = client.post(preferences, json={"themes": [MINDS], "frequency": value})
    if value is None:
        assert answer.status_code == 200  # null means "leave it as it is"
    else:
        assert answer.status_code == 422
    assert table_snapshot() == before


def test_preferences_page_offers_the_choice_and_saves_it(client, smtp):
    preferences = confirmed(client, smtp, "page@example.net", [MINDS])
    page = client.get(preferences).text
    assert (
        'id="frequency-immediate" name="frequency" type="radio" value="immediate" checked' in page
    )
    saved = client.post(
        preferences, data={"action": "save", "themes": [MINDS], "frequency": "weekly"}
    )
    assert saved.status_code == 200 and "one weekly summary" in saved.text
    assert 'value="weekly" checked' in client.get(preferences).text


def test_weekly_subscribers_do_not_get_each_update(client, smtp):
    confirmed(client, smtp, "now@example.net", [MINDS])
    confirmed(client, smtp, "later@example.net", [MINDS], frequency="weekly")
    update_id = draft("News", "Body", [MINDS])
    assert start(update_id) == 1
    wait_sent(update_id)
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["now@example.net"]


def test_an_unsubscribed_person_cannot_change_frequency(client, smtp):
    preferences = confirmed(client, smtp, "gone@example.net", [MINDS])
    client.post(preferences, json={"themes": []})
    before = table_snapshot()
    answer = client.post(preferences, json={"frequency": "weekly"})
    assert answer.status_code == 409
    assert table_snapshot() == before


def test_a_forged_preferences_link_cannot_change_frequency(client, smtp):
    preferences = confirmed(client, smtp, "target@example.net", [MINDS])
    forged = preferences[:-3] + ("aaa" if not preferences.endswith("aaa") else "bbb")
    before = table_snapshot()
    assert client.post(forged, json={"frequency": "weekly"}).status_code == 400
    assert table_snapshot() == before
    assert _my_data(client, smtp, preferences)["subscriber"]["frequency"] == "immediate"
