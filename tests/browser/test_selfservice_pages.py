"""A subscriber's own pages in a real Chromium with no cookies, reached only from emailed links:
preferences, data download, unsubscribe, the erasure request and erasure; axe-core on each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from mailing.models import Subscriber
from mailing.states import SubscriberStatus
from mailing.subscribers.records import themes_of
from tests.browser.conftest import check_accessibility, screenshot
from tests.support.helpers import subscribe

pytestmark = pytest.mark.browser


def _emailed(mail, live_server: str, kind: str) -> str:
    found = [u for u in mail.links if u.startswith(f"{live_server}/{kind}/")]
    assert len(found) == 1, mail.links
    return found[0]


def _active(live_server, smtp, page, email: str, themes: list[str]):
    """Sign up through the JSON API and confirm in the browser: the welcome email that follows
    carries the preferences and unsubscribe links."""
    import httpx

    with httpx.Client(base_url=live_server) as http:
        subscribe(http, email, themes)
        [confirm] = smtp.outbox.wait_for(1)
        page.goto(_emailed(confirm, live_server, "confirm"))
        page.get_by_role("button", name="Confirm my subscription").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
        return next(m for m in smtp.outbox.wait_for(2) if m.subject.startswith("Welcome"))


def test_preferences_download_and_unsubscribe(page, live_server, smtp, session):
    mail = _active(live_server, smtp, page, "browser-prefs@example.org", ["healthy-minds"])
    page.context.clear_cookies()

    page.goto(_emailed(mail, live_server, "preferences"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Your subscription")
    expect(page.get_by_label("Healthy Minds", exact=True)).to_be_checked()
    check_accessibility(page)
    screenshot(page, "preferences")

    # The page holds no download link: its button emails one to the subscriber's own address.
    page.get_by_role("button", name="Email me a link to download my data").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    check_accessibility(page)
    screenshot(page, "download-link-sent")
    emailed = smtp.outbox.wait_for(3)[2]
    assert emailed.to == ["browser-prefs@example.org"]
    # The link opens the data in words, at a phone's width and a desktop's; the JSON is a link.
    page.goto(_emailed(emailed, live_server, "my-data"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Your data")
    expect(page.get_by_text("You confirmed your subscription to Healthy Minds")).to_be_visible()
    for width in (390, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        check_accessibility(page)
        screenshot(page, f"my-data-{width}")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download all of it as a file (JSON)").click()
    data = json.loads(Path(download.value.path()).read_text())
    assert data["subscriber"]["email"] == "browser-prefs@example.org"

    page.goto(_emailed(mail, live_server, "preferences"))

    page.get_by_label("Healthy Places", exact=True).check()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your choices are saved")
    check_accessibility(page)
    screenshot(page, "preferences-saved")
    sub = session.exec(select(Subscriber)).one()
    assert themes_of(session, sub.id) == ["healthy-minds", "healthy-places"]

    page.goto(_emailed(mail, live_server, "unsubscribe"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Unsubscribe")
    check_accessibility(page)
    screenshot(page, "unsubscribe")
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
    check_accessibility(page)
    screenshot(page, "unsubscribed")
    session.expire_all()
    assert session.exec(select(Subscriber)).one().status == SubscriberStatus.UNSUBSCRIBED


def test_erasure_request_and_erase(page, live_server, smtp, session):
    _active(live_server, smtp, page, "browser-erase@example.org", ["healthy-living"])
    page.context.clear_cookies()

    page.goto("/erasure-requests")
    check_accessibility(page)
    page.get_by_role("button", name="Send me the link").click()
    expect(page.get_by_role("alert")).to_contain_text("Enter")
    check_accessibility(page)
    screenshot(page, "erasure-request-error")
    page.get_by_label("Email address").fill("browser-erase@example.org")
    page.get_by_role("button", name="Send me the link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    check_accessibility(page)
    screenshot(page, "erasure-requested")

    mail = smtp.outbox.wait_for(3)[2]
    page.goto(_emailed(mail, live_server, "erase"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Erase your data")
    check_accessibility(page)
    screenshot(page, "erase")
    page.get_by_role("button", name="Erase my data").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your data is erased")
    check_accessibility(page)
    screenshot(page, "erased")
    session.expire_all()
    assert session.exec(select(Subscriber)).all() == []
