"""The public archive, the sign-up page's frequency choice, and the new emails' HTML in a real
Chromium: axe-core (WCAG 2.2 AA) on each, screenshots at 320 px and desktop widths, and the
archive's theme filter used with JavaScript switched off."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect
from sqlmodel import Session

from mailing.db import get_engine
from mailing.models import utcnow
from mailing.sending import digests
from mailing.sending import summaries as digest_sending
from tests.browser.conftest import check_accessibility, screenshot
from tests.conftest import drain_worker
from tests.support.residents import put_update
from workers.enqueue import enqueue_digest_batch

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}
BODY = (
    "## What is changing\n\nNew **clinic hours** from Monday. [Read the plan](https://example.org).\n\n"
    "- Mornings\n- Evenings\n\n> A quote from a resident.\n"
)


def _both_widths(page, name: str) -> None:
    check_accessibility(page)
    screenshot(page, f"{name}-320")
    page.set_viewport_size(DESKTOP)
    check_accessibility(page)
    screenshot(page, f"{name}-desktop")
    page.set_viewport_size({"width": 320, "height": 800})


def test_archive_pages_are_accessible_at_both_widths(page, live_server):
    page.set_viewport_size({"width": 320, "height": 800})
    first = put_update("Clinic hours are changing", ["healthy-minds"], body=BODY)
    put_update("Parks for everyone", ["healthy-places", "healthy-living"])
    page.goto("/updates")
    expect(page.get_by_role("heading", level=1)).to_have_text("Past updates")
    _both_widths(page, "archive")
    page.get_by_role("link", name="Clinic hours are changing").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Clinic hours are changing")
    _both_widths(page, "archive-update")
    page.goto(f"/updates/{first + 100}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Update not found")
    _both_widths(page, "archive-missing")


def test_archive_theme_filter_works_without_javascript(browser, live_server):
    put_update("About minds", ["healthy-minds"])
    put_update("About places", ["healthy-places"])
    context = browser.new_context(java_script_enabled=False, base_url=live_server)
    page = context.new_page()
    try:
        page.goto("/")
        page.get_by_role("link", name="See past updates").click()
        page.get_by_label("Healthy Places", exact=True).check()
        page.get_by_role("button", name="Show updates").click()
        expect(page.get_by_role("link", name="About places")).to_be_visible()
        expect(page.get_by_role("link", name="About minds")).to_have_count(0)
    finally:
        context.close()


def test_signup_page_with_the_frequency_choice_is_accessible(page, live_server):
    page.goto("/")
    expect(page.get_by_role("radio", name="A weekly summary")).to_be_visible()
    _both_widths(page, "signup-frequency")


def _open_email(browser, html: str, name: str) -> None:
    """As a mail client shows it: a blank page of its own, not under the site's CSP."""
    context = browser.new_context(viewport={"width": 320, "height": 800})
    try:
        email_page = context.new_page()
        email_page.set_content(html)
        _both_widths(email_page, name)
    finally:
        context.close()


def test_welcome_update_and_summary_emails_pass_axe(browser, page, live_server, smtp):
    smtp.outbox.clear()
    subscribe_and_confirm(page, live_server, smtp)
    welcome = next(m for m in smtp.outbox.wait_for(2) if m.subject.startswith("Welcome"))
    _open_email(browser, welcome.part("html"), "email-welcome")

    _, until = digests.week_window(digests.latest_saturday(utcnow()) + timedelta(days=7))
    put_update("Clinic hours", ["healthy-minds"], body=BODY, sent_at=until - timedelta(days=1))
    # One kept out of the archive is given whole: its Markdown is checked in the summary too.
    put_update(
        "Staff news",
        ["healthy-minds"],
        body=BODY,
        sent_at=until - timedelta(days=2),
        published=False,
    )
    with Session(get_engine()) as session:
        digest_sending.run(session, until + timedelta(minutes=1), enqueue_digest_batch)
    drain_worker()
    summary = next(m for m in smtp.outbox.messages() if m.subject.startswith("Your weekly"))
    _open_email(browser, summary.part("html"), "email-weekly-summary")

    from mailing import updates
    from tests.support.sending import update_row

    update_id = put_update("Clinic hours", ["healthy-minds"], body=BODY)
    shown = updates.preview(update_row(update_id))
    assert "View in your browser" in shown.html
    _open_email(browser, shown.html, "email-update")


def subscribe_and_confirm(page, live_server, smtp) -> None:
    assert subscribe_api(live_server, "weekly.reader@example.org").status_code == 202
    [mail] = smtp.outbox.wait_for(1)
    [link] = [u for u in mail.links if u.startswith(f"{live_server}/confirm/")]
    page.goto(link)
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")


def subscribe_api(live_server: str, email: str):
    import httpx

    return httpx.post(
        f"{live_server}/subscriptions",
        json={"email": email, "themes": ["healthy-minds"], "consent": True, "frequency": "weekly"},
    )
