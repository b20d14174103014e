"""The public archive: /updates, /updates/{id}, /updates.atom, the published flag, and the
"View in your browser" link in every update email."""

from __future__ import annotations

from datetime import timedelta

import feedparser
import pytest

from mailing.models import utcnow
from mailing.states import UpdateStatus
from tests.support.helpers import table_snapshot
from tests.support.residents import confirmed, put_update
from tests.support.sending import api_staff as make_staff
from tests.support.sending import wait_sent, wait_until

MINDS, PLACES = "healthy-minds", "healthy-places"


def _ids(html: str, *ids: int) -> list[bool]:
    return [f'href="/updates/{i}"' in html for i in ids]


def test_archive_lists_only_sent_published_updates_newest_first(client):
    now = utcnow()
    older = put_update("Older news", [MINDS], sent_at=now - timedelta(days=2))
    newer = put_update("Newer news", [PLACES], sent_at=now - timedelta(days=1))
    hidden = put_update("Unpublished", [MINDS], published=False)
    never = [
        put_update(f"Not sent {s.value}", [MINDS], status=s)
        for s in (
            UpdateStatus.DRAFT,
            UpdateStatus.SCHEDULED,
            UpdateStatus.SENDING,
            UpdateStatus.PAUSED,
            UpdateStatus.CANCELLED,
        )
    ]
    page = client.get("/updates")
    assert page.status_code == 200
    html = page.text
    assert _ids(html, older, newer) == [True, True]
    assert html.index(f"/updates/{newer}") < html.index(f"/updates/{older}")
    assert _ids(html, hidden, *never) == [False] * 6
    assert "The first paragraph of the update." in html


def test_archive_filters_by_theme(client):
    minds = put_update("Minds", [MINDS])
    places = put_update("Places", [PLACES])
    both = put_update("Both", [MINDS, PLACES])
    html = client.get("/updates", params={"theme": MINDS}).text
    assert _ids(html, minds, places, both) == [True, False, True]
    html = client.get("/updates", params=[("theme", PLACES), ("theme", MINDS)]).text
    assert _ids(html, minds, places, both) == [True, True, True]
    # The filter form works without JavaScript: a plain GET form.
    assert '<form method="get" action="/updates"' in html


def test_archive_pages_through_many_updates(client):
    ids = [
        put_update(f"News {i}", [MINDS], sent_at=utcnow() - timedelta(hours=i)) for i in range(25)
    ]
    first = client.get("/updates").text
    assert _ids(first, ids[0], ids[19], ids[20]) == [True, True, False]
    assert 'href="/updates?page=2"' in first
    second = client.get("/updates", params={"page": 2}).text
    assert _ids(second, ids[20], ids[24], ids[0]) == [True, True, False]


def test_one_update_page_shows_the_email_text_without_inline_styles(client):
    update_id = put_update("Clinic hours", [MINDS], body="## When\n\nOpen **daily**.")
    page = client.get(f"/updates/{update_id}")
    assert page.status_code == 200
    assert "<strong>Open" not in page.text  # bold, not raw markup
    assert "<strong>daily</strong>" in page.text
    assert "style=" not in page.text  # the pages' CSP allows no inline style
    assert "Clinic hours" in page.text


@pytest.mark.parametrize(
    "status",
    [UpdateStatus.DRAFT, UpdateStatus.SCHEDULED, UpdateStatus.PAUSED, UpdateStatus.CANCELLED],
)
def test_update_page_is_404_until_sent(client, status):
    update_id = put_update("Not yet", [MINDS], status=status)
    assert client.get(f"/updates/{update_id}").status_code == 404


def test_update_page_is_404_when_not_published(client):
    update_id = put_update("Staff only", [MINDS], published=False)
    assert client.get(f"/updates/{update_id}").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/updates/0",
        "/updates/-1",
        "/updates/99999999999999999999",
        "/updates/1e3",
        "/updates/%00",
        "/updates/abc",
        "/updates/1.0",
    ],
)
def test_hostile_update_ids_get_404_not_500(client, path):
    put_update("Real", [MINDS])
    assert client.get(path).status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        {"theme": "<script>alert(1)</script>"},
        {"theme": "healthy-minds,healthy-places"},
        {"page": "0"},
        {"page": "-1"},
        {"page": "x"},
        {"page": "9" * 40},
        [("theme", MINDS)] * 6,
    ],
)
def test_bad_archive_filters_get_400_and_change_nothing(client, query):
    put_update("Real", [MINDS])
    before = table_snapshot()
    for path in ("/updates", "/updates.atom"):
        answer = client.get(path, params=query)
        if path.endswith(".atom") and "theme" not in str(query):
            continue  # the feed has no pages
        assert answer.status_code == 400, (path, query)
        assert "<script>alert" not in answer.text
    assert table_snapshot() == before


def test_atom_feed_is_valid_and_lists_published_sent_updates(client):
    shown = put_update("Fish & <chips>", [MINDS], body="A [link](https://example.org/a?b=1&c=2).")
    hidden = put_update("Hidden", [MINDS], published=False)
    draft = put_update("Draft", [MINDS], status=UpdateStatus.DRAFT)
    answer = client.get("/updates.atom")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(answer.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert feed.feed.title.startswith("Health Inequalities Strategy updates")
    assert [e.link for e in feed.entries] == [f"http://testserver/updates/{shown}"]
    [entry] = feed.entries
    assert entry.title == "Fish & <chips>"
    assert entry.id == f"http://testserver/updates/{shown}"
    assert 'href="https://example.org/a?b=1&amp;c=2"' in entry.content[0].value
    assert [t.term for t in entry.tags] == [MINDS]
    assert f"/updates/{hidden}" not in answer.text and f"/updates/{draft}" not in answer.text


def test_atom_feed_stays_valid_with_characters_xml_cannot_hold(client):
    # Drafting refuses such characters now; an update stored before that check may hold them.
    import sqlalchemy as sa

    from mailing.db import get_engine

    update_id = put_update("Formfeed", [MINDS])
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE theme_update SET subject = :s, body = :b WHERE id = :i"),
            {"s": "Form\x0cfeed", "b": "Tab\tand form feed\x0c and bell\x07 here.", "i": update_id},
        )
    feed = feedparser.parse(client.get("/updates.atom").content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.entries[0].title == "Formfeed"


def test_archive_dates_are_london_dates(client):
    from datetime import UTC, datetime

    # 23:30 UTC on 30 June is already 1 July in London (summer time).
    update_id = put_update("Late", [MINDS], sent_at=datetime(2026, 6, 30, 23, 30, tzinfo=UTC))
    assert "1 July 2026" in client.get(f"/updates/{update_id}").text


def test_atom_feed_filters_by_theme_and_is_valid_when_empty(client):
    put_update("Minds", [MINDS])
    feed = feedparser.parse(client.get("/updates.atom", params={"theme": PLACES}).content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.entries == []


def test_feed_links_ignore_a_spoofed_host_header(client):
    update_id = put_update("Minds", [MINDS])
    text = client.get("/updates.atom", headers={"host": "evil.example"}).text
    assert "evil.example" not in text
    assert f"http://testserver/updates/{update_id}" in text


def test_archive_pages_hold_no_personal_data(client, smtp):
    preferences = confirmed(client, smtp, "private.person@example.net", [MINDS])
    token = preferences.rsplit("/", 1)[1]
    update_id = put_update("Public news", [MINDS])
    for path in ("/updates", f"/updates/{update_id}", "/updates.atom"):
        text = client.get(path).text
        assert "private.person" not in text and token not in text, path
        assert "/preferences/" not in text and "/unsubscribe/" not in text, path


def test_signup_page_links_to_past_updates(client):
    assert '<a href="/updates">See past updates</a>' in client.get("/").text


def _api(client, token, method, path, **kwargs):
    return client.request(method, path, headers={"authorization": f"Bearer {token}"}, **kwargs)


def test_staff_api_publishes_by_default_and_can_unpublish(client):
    token = make_staff("sender")
    body = {"subject": "S", "body": "B", "themes": [MINDS]}
    created = _api(client, token, "POST", "/admin/updates", json=body).json()
    assert created["published"] is True
    hidden = _api(client, token, "POST", "/admin/updates", json={**body, "published": False})
    assert hidden.status_code == 201 and hidden.json()["published"] is False
    changed = _api(
        client, token, "PATCH", f"/admin/updates/{created['id']}", json={"published": False}
    )
    assert changed.json()["published"] is False


@pytest.mark.parametrize("value", ["yes", 1, "true", [], {}])
def test_staff_api_refuses_a_published_value_that_is_not_a_boolean(client, value):
    token = make_staff("editor")
    before = table_snapshot()
    body = {"subject": "S", "body": "B", "themes": [MINDS], "published": value}
    answer = _api(client, token, "POST", "/admin/updates", json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "published"]
    assert table_snapshot() == before


def _send(client, token, update_id):
    assert _api(client, token, "POST", f"/admin/updates/{update_id}/send").status_code == 202
    return wait_sent(update_id)


def test_update_email_has_a_view_in_browser_link_to_its_archive_page(client, smtp):
    confirmed(client, smtp, "reader@example.net", [MINDS])
    token = make_staff("sender")
    body = {"subject": "Open day", "body": "Come **along**.", "themes": [MINDS]}
    update_id = _api(client, token, "POST", "/admin/updates", json=body).json()["id"]
    _send(client, token, update_id)
    [mail] = smtp.outbox.wait_for(1)
    url = f"http://testserver/updates/{update_id}"
    assert f"View in your browser:\n{url}" in mail.part("plain").replace("\r\n", "\n")
    assert f'href="{url}">View in your browser</a>' in mail.part("html")
    page = client.get(f"/updates/{update_id}")
    assert page.status_code == 200 and "<strong>along</strong>" in page.text


def test_unpublished_update_email_has_no_browser_link(client, smtp):
    confirmed(client, smtp, "reader@example.net", [MINDS])
    token = make_staff("sender")
    body = {"subject": "Internal", "body": "Text.", "themes": [MINDS], "published": False}
    update_id = _api(client, token, "POST", "/admin/updates", json=body).json()["id"]
    _send(client, token, update_id)
    [mail] = smtp.outbox.wait_for(1)
    assert "/updates/" not in mail.part("plain") and "/updates/" not in mail.part("html")
    assert client.get(f"/updates/{update_id}").status_code == 404


def test_archive_end_to_end_in_production(client, smtp, settings_env):
    """Every setting at its default but MAILING_ENV=production: send, then read it in public."""
    from fastapi.testclient import TestClient

    from mailing.web.app import create_app

    settings_env(env="production")
    with TestClient(create_app(), raise_server_exceptions=False) as prod:
        confirmed(prod, smtp, "prod.reader@example.net", [PLACES])
        token = make_staff("sender")
        body = {"subject": "Parks", "body": "New **parks**.", "themes": [PLACES]}
        update_id = _api(prod, token, "POST", "/admin/updates", json=body).json()["id"]
        _send(prod, token, update_id)
        wait_until(lambda: len(smtp.outbox.messages()) >= 1, 30, "the update email")
        assert f"/updates/{update_id}" in smtp.outbox.messages()[0].part("plain")
        assert f'href="/updates/{update_id}"' in prod.get("/updates").text
        assert prod.get(f"/updates/{update_id}").status_code == 200
        feed = feedparser.parse(prod.get("/updates.atom").content)
        assert not feed.bozo and len(feed.entries) == 1


def test_console_compose_has_the_published_box_ticked_and_honours_unticking(client, session):
    from sqlmodel import select

    from mailing.models import Update
    from tests.staff.test_console import compose, csrf_of, signed_in_client

    signed_in_client(client, session)
    box = 'id="published" name="published" type="checkbox" value="yes" checked'
    assert box in client.get("/admin/compose").text
    shown = compose(client, subject="Shown", published="yes")
    hidden = compose(client, subject="Hidden")  # an unticked box is not sent at all
    assert shown.status_code == hidden.status_code == 303
    by_subject = {u.subject: u for u in session.exec(select(Update)).all()}
    assert by_subject["Shown"].published is True
    assert by_subject["Hidden"].published is False
    draft_path = f"/admin/drafts/{by_subject['Hidden'].id}"
    page = client.get(draft_path).text
    assert 'id="published" name="published" type="checkbox" value="yes">' in page
    data = {
        "subject": "Hidden",
        "body": "Now public.",
        "themes": [MINDS],
        "published": "yes",
        "csrf_token": csrf_of(page),
    }
    assert client.post(draft_path, data=data, follow_redirects=False).status_code == 303
    session.expire_all()
    assert session.get(Update, by_subject["Hidden"].id).published is True


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "## What is changing\n\nNew **hours** from Monday.\n\n- Mornings",
            "New hours from Monday.",
        ),
        ("# Only a heading", "Only a heading"),
        ("word " * 100, ("word " * 48).strip() + "…"),
    ],
)
def test_summary_is_the_opening_paragraph_in_plain_text(body, expected):
    from mailing.updates.archive import summary

    assert summary(body) == expected
