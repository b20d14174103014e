"""The console as the comms team uses it (issue 26): counts that agree between compose and send,
what the progress page says after a cancel and during a pause, the dashboard's figures and
London times, a cancelled update's archive page, the figures page with no data, duplicating and
deleting drafts, the read-only view of a sent update, the weekly-summary preview and help."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlmodel import select

from mailing.models import AuditLog, Delivery, Subscriber, SubscriberTheme, Update, utcnow
from mailing.states import DeliveryStatus, Frequency, UpdateStatus
from tests.staff.test_console import (
    add_subscribers,
    csrf_of,
    make_staff,
    make_update,
    sign_in,
    signed_in_client,
)
from tests.support.helpers import count, table_snapshot
from tests.support.residents import put_update

MINDS = "healthy-minds"


def add_weekly(session, n: int, themes=(MINDS,), prefix: str = "w") -> None:
    for i in range(n):
        sub = Subscriber(
            email=f"{prefix}{i}@example.org",
            email_key=f"{prefix}{i}@example.org",
            status="active",
            frequency=Frequency.WEEKLY,
        )
        session.add(sub)
        session.flush()
        session.add_all(SubscriberTheme(subscriber_id=sub.id, theme=t) for t in themes)
    session.commit()


def post(client, path: str, page_path: str, **data):
    token = csrf_of(client.get(page_path).text)
    return client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


# ---------------------------------------------------------------------------------------------
# 4: compose and send agree


def test_compose_and_send_pages_give_the_same_split_of_active_subscribers(client, session):
    add_subscribers(session, 2, themes=(MINDS,))
    add_weekly(session, 1)
    signed_in_client(client, session, "sender@gla.example", "sender")
    sentence = "3 active: 2 get each update, 1 the weekly summary"
    assert (
        f'Healthy Minds <span class="theme-count">({sentence})' in client.get("/admin/compose").text
    )
    update = make_update(session, themes=MINDS)
    confirm = client.get(f"/admin/drafts/{update.id}/send").text
    assert sentence in confirm
    assert "Yes, send to 2 subscribers" in confirm


# ---------------------------------------------------------------------------------------------
# 9: progress after a cancel, during a pause


def _started(session, n: int, sent: int) -> Update:
    """A real send started (deliveries written, no worker told), `sent` of them taken."""
    from tests.support.sending import start

    ids = add_subscribers(session, n, themes=(MINDS,))
    update = make_update(session, themes=MINDS, published=True)
    assert start(update.id, enqueue=False) == n
    session.expire_all()
    rows = session.exec(select(Delivery).where(Delivery.update_id == update.id)).all()
    for row in rows[:sent]:
        row.status = DeliveryStatus.SENT
    session.commit()
    assert len(ids) == n
    return update


def test_after_a_cancel_the_progress_page_shows_a_grey_bar_and_what_went(client, session):
    signed_in_client(client, session, "sender@gla.example", "sender")
    update = _started(session, 4, sent=1)
    progress = f"/admin/drafts/{update.id}/progress"
    assert "This page updates by itself while the update is sending." in client.get(progress).text
    page = f"/admin/drafts/{update.id}/cancel"
    answer = post(client, page, page)
    assert answer.status_code == 303
    html = client.get(progress).text
    assert "1 of 4 sent before it was cancelled; 3 not sent." in html
    assert 'class="send-progress send-progress-stopped"' in html
    assert 'value="1"' in html and "100 %" not in html
    assert "updates by itself" not in html
    body = client.get(f"{progress}.json").json()
    assert (body["status"], body["percent"]) == ("cancelled", 25)


def test_during_a_pause_the_page_says_why_the_count_may_still_rise(client, session):
    signed_in_client(client, session, "sender@gla.example", "sender")
    update = _started(session, 3, sent=1)
    answer = post(client, f"/admin/drafts/{update.id}/pause", f"/admin/drafts/{update.id}/progress")
    assert answer.status_code == 303
    html = client.get(f"/admin/drafts/{update.id}/progress").text
    assert "Paused: the batches already with the mail server finish" in html
    assert "updates by itself" not in html


# ---------------------------------------------------------------------------------------------
# 10: the dashboard


def test_dashboard_counts_only_real_sends_plans_scheduled_ones_and_shows_london_time(
    client, session
):
    add_subscribers(session, 2, themes=(MINDS,))
    signed_in_client(client, session)
    summer = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)  # 09:00 in London (BST)
    make_update(session, "sent", subject="Went out", recipients=2, created_at=summer)
    make_update(session, "sending", subject="Going out", recipients=2)
    make_update(session, "paused", subject="Held", recipients=2)
    make_update(session, "cancelled", subject="Stopped", recipients=2)
    make_update(session, "draft", subject="Drafty")
    make_update(session, "scheduled", subject="Planned", send_at=utcnow() + timedelta(days=1))
    html = client.get("/admin").text
    assert re.search(r'<span class="figure">3</span> sent or sending', html)
    planned = html.split("Planned</a>")[1].split("</tr>")[0]
    assert '2 <span class="hint">planned</span>' in planned
    assert "Created (London time)" in html
    went = html.split("Went out</a>")[1].split("</tr>")[0]
    assert "01 Jul 2026 09:00" in went


# ---------------------------------------------------------------------------------------------
# 11: a cancelled published update keeps its page, unlisted


def test_a_published_update_cancelled_part_way_keeps_its_page_but_is_never_listed(client, session):
    signed_in_client(client, session, "sender@gla.example", "sender")
    update = _started(session, 3, sent=1)
    post(client, f"/admin/drafts/{update.id}/cancel", f"/admin/drafts/{update.id}/cancel")
    never_started = put_update("Never went", [MINDS], status=UpdateStatus.CANCELLED)
    page = client.get(f"/updates/{update.id}")
    assert page.status_code == 200 and "Healthy Minds in March" in page.text
    assert client.get(f"/updates/{never_started}").status_code == 404
    assert f'href="/updates/{update.id}"' not in client.get("/updates").text
    assert f"/updates/{update.id}" not in client.get("/updates.atom").text
    # The console's read-only view links to it and says it is not listed.
    view = client.get(f"/admin/drafts/{update.id}/progress").text
    assert f'href="/updates/{update.id}"' in view and "not listed" in view


# ---------------------------------------------------------------------------------------------
# 13: figures with no data, sends by subject


def test_figures_page_says_there_is_no_data_instead_of_drawing_empty_axes(client, session):
    signed_in_client(client, session)
    html = client.get("/admin/figures").text
    assert "Nobody is subscribed yet, so there is nothing to draw." in html
    assert "<svg viewBox" not in html
    assert "No update has been sent yet" in html


def test_figures_page_lists_sends_by_subject(client, session):
    from tests.support.deliverability import sent_update

    signed_in_client(client, session)
    copies = sent_update(2)
    with_subject = session.get(Update, _update_of(session, copies[0].delivery_id))
    with_subject.status, with_subject.sent_at = UpdateStatus.SENT, utcnow()
    session.commit()
    html = client.get("/admin/figures").text
    assert f">{with_subject.subject}</a>" in html
    assert f">#{with_subject.id}</a>" not in html
    assert "<svg viewBox" in html  # two active subscribers: the chart is drawn


def _update_of(session, delivery_id: int) -> int:
    return session.get(Delivery, delivery_id).update_id


# ---------------------------------------------------------------------------------------------
# Extras: duplicate, delete, read-only view, weekly summary, help


def test_duplicate_any_update_as_a_new_draft(client, session):
    signed_in_client(client, session)
    sent = make_update(session, "sent", subject="Old news", body="Body **here**.", published=False)
    answer = post(client, f"/admin/drafts/{sent.id}/duplicate", f"/admin/drafts/{sent.id}/progress")
    assert answer.status_code == 303
    new_id = int(re.search(r"/admin/drafts/(\d+)\?copied=1", answer.headers["location"]).group(1))
    copy = session.get(Update, new_id)
    assert (copy.status, copy.subject, copy.body, copy.themes, copy.published) == (
        UpdateStatus.DRAFT,
        "Old news",
        "Body **here**.",
        MINDS,
        False,
    )
    assert "copied from the update you chose" in client.get(answer.headers["location"]).text
    actions = session.exec(select(AuditLog.action).where(AuditLog.update_id == new_id)).all()
    assert "duplicated" in actions


def test_duplicate_without_csrf_changes_nothing(client, session):
    signed_in_client(client, session)
    sent = make_update(session, "sent")
    before = table_snapshot()
    answer = client.post(f"/admin/drafts/{sent.id}/duplicate", follow_redirects=False)
    assert 400 <= answer.status_code < 500
    assert table_snapshot() == before


def test_delete_a_draft_after_confirming_and_it_is_audited(client, session):
    signed_in_client(client, session)
    draft = make_update(session, subject="Throwaway")
    confirm = client.get(f"/admin/drafts/{draft.id}/delete")
    assert confirm.status_code == 200 and "Yes, delete the draft" in confirm.text
    assert count("theme_update") == 1  # the confirmation alone deletes nothing
    answer = client.post(
        f"/admin/drafts/{draft.id}/delete",
        data={"csrf_token": csrf_of(confirm.text)},
        follow_redirects=False,
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/admin?deleted=1")
    assert count("theme_update") == 0
    assert "The draft is deleted." in client.get(answer.headers["location"]).text
    row = session.exec(select(AuditLog).where(AuditLog.action == "draft-deleted")).one()
    assert row.detail == f"#{draft.id}: Throwaway"
    assert "Throwaway" in client.get("/admin/audit").text


def test_a_sent_or_scheduled_update_cannot_be_deleted(client, session):
    signed_in_client(client, session)
    for status in ("sent", "scheduled"):
        update = make_update(session, status)
        before = table_snapshot()
        answer = post(
            client, f"/admin/drafts/{update.id}/delete", f"/admin/drafts/{update.id}/progress"
        )
        assert answer.status_code == 409
        assert table_snapshot() == before
        page = client.get(f"/admin/drafts/{update.id}/delete", follow_redirects=False)
        assert page.headers["location"] == f"/admin/drafts/{update.id}/progress"


def test_a_sent_update_reads_in_the_console(client, session):
    signed_in_client(client, session)
    sent = make_update(session, "sent", body="## Clinics\n\nOpen **daily**.", recipients=3)
    html = client.get(f"/admin/drafts/{sent.id}/progress").text
    assert "What it says" in html and "<strong>daily</strong>" in html
    assert f'href="/admin/drafts/{sent.id}/preview"' in html
    assert client.get(f"/admin/drafts/{sent.id}/preview").status_code == 200


def test_weekly_summary_preview_lists_this_weeks_updates(client, session):
    add_weekly(session, 2)
    add_weekly(session, 1, themes=("healthy-places",), prefix="places")
    signed_in_client(client, session)
    empty = client.get("/admin/weekly-summary").text
    assert "No update has been sent since the last summary" in empty
    assert "(London)" in empty
    from mailing.sending import digests

    now = utcnow()
    since = digests.send_moment(digests.latest_saturday(now))
    put_update("This weeks news", [MINDS], sent_at=since + (now - since) / 2)
    put_update("Long ago", [MINDS], sent_at=since - timedelta(minutes=1))
    put_update("Kept out", [MINDS], published=False, sent_at=since + (now - since) / 3)
    html = client.get("/admin/weekly-summary").text
    assert "This weeks news" in html and "Kept out" in html and "Long ago" not in html
    assert "given in full" in html
    assert '<span class="figure" id="summary-readers">2</span>' in html


def test_help_page_is_linked_from_the_navigation(client, session):
    signed_in_client(client, session)
    dashboard = client.get("/admin").text
    assert 'href="/admin/help"' in dashboard and 'href="/admin/weekly-summary"' in dashboard
    html = client.get("/admin/help").text
    assert "Why there are no open or click figures" in html and "Markdown" in html


def test_the_new_pages_on_production_defaults(database, smtp, worker, session, settings_env):
    """End to end on MAILING_ENV=production with every other setting at its default."""
    from mailing.web.app import create_app

    settings_env(env="production")
    make_staff(session, "editor@gla.example")
    add_subscribers(session, 1, themes=(MINDS,))
    sent = make_update(session, "sent", subject="Prod news", sent_at=utcnow(), recipients=1)
    with TestClient(create_app(), base_url="https://testserver") as c:
        assert sign_in(c, "editor@gla.example").status_code == 303
        for path in ("/admin/help", "/admin/weekly-summary", "/admin", "/admin/figures"):
            assert c.get(path).status_code == 200, path
        answer = post(c, f"/admin/drafts/{sent.id}/duplicate", f"/admin/drafts/{sent.id}/progress")
        assert answer.status_code == 303
        new_id = int(re.search(r"/admin/drafts/(\d+)", answer.headers["location"]).group(1))
        answer = post(c, f"/admin/drafts/{new_id}/delete", f"/admin/drafts/{new_id}/delete")
        assert answer.headers["location"] == "/admin?deleted=1"
    assert count("theme_update") == 1
