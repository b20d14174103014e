"""The staff console in a real Chromium: sign in, draft, preview, test-send, send with the
confirmation step, and watch the progress bar reach 100 % without a reload; axe-core and a
screenshot on every console page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from mailing.models import Subscriber, SubscriberCountSnapshot, SubscriberTheme, utcnow
from mailing.staff import signin
from mailing.states import SubscriberStatus
from mailing.themes import THEMES
from tests.browser.conftest import TIMEOUT_MS, check_accessibility, screenshot
from tests.support.staff import PASSWORD, browser_second_factor, give_totp, make_staff

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
def desk(browser: Any, live_server: str) -> Iterator[Any]:
    """A desktop-sized page: staff use the console at a desk (the `page` fixture is a phone)."""
    context = browser.new_context(viewport=DESKTOP, base_url=live_server)
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    yield p
    context.close()


def add_subscribers(session, themes_by_email: dict[str, list[str]]) -> None:
    for email, themes in themes_by_email.items():
        sub = Subscriber(email=email, email_key=email.lower(), status=SubscriberStatus.ACTIVE)
        session.add(sub)
        session.flush()
        for theme in themes:
            session.add(SubscriberTheme(subscriber_id=sub.id, theme=theme))
    session.commit()


def sign_in(p, email: str, password: str = PASSWORD, *, factor: bool = True) -> None:
    """Password, then (unless `factor` is False, as for a wrong password) a computed code."""
    give_totp(email)
    p.goto("/admin/login")
    p.get_by_label("Email address").fill(email)
    p.get_by_label("Password").fill(password)
    p.get_by_role("button", name="Sign in").click()
    if factor:
        browser_second_factor(p, email)


def save_draft(p, subject: str, theme: str, message: str) -> None:
    """Compose a draft on one theme and press Save draft."""
    p.goto("/admin/compose")
    p.get_by_label("Subject").fill(subject)
    p.get_by_role("checkbox", name=re.compile(f"^{theme}")).check()
    p.get_by_label("Message").fill(message)
    p.get_by_role("button", name="Save draft").click()


def test_sign_in_page_and_its_errors(desk, page, session):
    make_staff(session, "editor@gla.example", "editor")
    desk.goto("/admin")
    expect(desk).to_have_url(re.compile(r"/admin/login"))
    expect(desk.get_by_role("heading", level=1)).to_have_text("Sign in")
    check_accessibility(desk)
    screenshot(desk, "admin-login")

    sign_in(desk, "editor@gla.example", "wrong password, sorry", factor=False)
    summary = desk.get_by_role("alert")
    expect(summary).to_contain_text(signin.WRONG_DETAILS)
    expect(desk).to_have_title(re.compile("^Error: "))
    check_accessibility(desk)
    screenshot(desk, "admin-login-error")

    # On a phone too.
    page.goto("/admin/login")
    check_accessibility(page)
    screenshot(page, "admin-login-phone")


def test_admin_pages_figures_audit_staff(desk, page, session):
    make_staff(session, "admin@gla.example", "admin")
    make_staff(session, "editor@gla.example", "editor")
    add_subscribers(
        session,
        {
            "a@example.org": ["healthy-minds", "healthy-places"],
            "b@example.org": ["healthy-minds"],
            "c@example.org": ["healthy-children", "healthy-living", "healthy-communities"],
        },
    )
    # Two earlier snapshots, so the chart has lines to draw.
    today = utcnow().date()
    for weeks_ago, scale in ((2, 0), (1, 1)):
        day = (today - timedelta(weeks=weeks_ago)).isoformat()
        for i, theme in enumerate(THEMES):
            session.add(
                SubscriberCountSnapshot(day=day, theme=theme, status="active", count=scale * i % 3)
            )
    session.commit()
    sign_in(desk, "admin@gla.example")
    expect(desk.get_by_role("heading", level=1)).to_have_text("Updates")
    check_accessibility(desk)
    screenshot(desk, "admin-dashboard-empty")

    desk.get_by_role("link", name="Figures").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Subscriber figures")
    expect(desk.get_by_role("img", name=re.compile("Active subscribers per theme"))).to_be_visible()
    minds = desk.get_by_role("row", name=re.compile("^Healthy Minds"))
    expect(minds.first).to_contain_text("2")
    check_accessibility(desk)
    screenshot(desk, "admin-figures")

    desk.get_by_role("link", name="Audit log").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Audit log")
    expect(desk.get_by_role("table")).to_contain_text("console-sign-in")
    check_accessibility(desk)
    screenshot(desk, "admin-audit")

    desk.get_by_role("link", name="Staff", exact=True).click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Staff")
    check_accessibility(desk)
    screenshot(desk, "admin-staff")
    desk.get_by_role("button", name="Disable editor@gla.example").click()
    expect(desk.get_by_role("row", name=re.compile("editor@gla.example"))).to_contain_text(
        "Disabled"
    )

    # The console on a phone: the header and navigation wrap, tables scroll.
    sign_in(page, "admin@gla.example")
    expect(page.get_by_role("heading", level=1)).to_have_text("Updates")
    check_accessibility(page)
    screenshot(page, "admin-dashboard-phone")
    page.goto("/admin/figures")
    check_accessibility(page)
    screenshot(page, "admin-figures-phone")

    desk.get_by_role("button", name="Sign out").click()
    expect(desk.get_by_role("status")).to_contain_text("You have signed out")
    desk.goto("/admin")
    expect(desk).to_have_url(re.compile(r"/admin/login"))


def test_staff_member_drafts_previews_tests_sends_and_watches_progress(desk, session, smtp):
    make_staff(session, "sender@gla.example", "sender")
    add_subscribers(
        session,
        {
            "one@example.org": ["healthy-minds"],
            "two@example.org": ["healthy-minds", "healthy-places"],
            "three@example.org": ["healthy-places"],
            "elsewhere@example.org": ["healthy-living"],
        },
    )
    sign_in(desk, "sender@gla.example")
    desk.get_by_role("link", name="New update").first.click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("New update")
    expect(
        desk.get_by_text("Healthy Places (2 active: 2 get each update, 0 the weekly summary)")
    ).to_be_visible()
    check_accessibility(desk)
    screenshot(desk, "admin-compose")

    desk.get_by_role("button", name="Save draft").click()
    expect(desk.get_by_role("alert")).to_contain_text("Enter a subject.")
    check_accessibility(desk)
    screenshot(desk, "admin-compose-errors")

    desk.get_by_label("Subject").fill("Healthy Minds and Places: spring news")
    desk.get_by_role("checkbox", name=re.compile("^Healthy Minds")).check()
    desk.get_by_role("checkbox", name=re.compile("^Healthy Places")).check()
    desk.get_by_label("Message").fill(
        "## What is new\n\nThe Mayor has opened **twelve** new community spaces.\n\n"
        "- Parks in Hackney\n- Libraries in Croydon\n\n"
        "[Read the strategy](https://www.london.gov.uk/)"
    )
    desk.get_by_role("button", name="Save draft").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Edit draft")
    expect(desk.get_by_role("status")).to_contain_text("Your draft is saved.")
    preview = desk.frame_locator("iframe[title^='Email preview']")
    expect(preview.get_by_role("heading", name="What is new")).to_be_visible()
    expect(preview.get_by_text("twelve")).to_be_visible()
    check_accessibility(desk)
    screenshot(desk, "admin-draft")

    desk.get_by_role("button", name="Send a test to me").click()
    expect(desk.get_by_role("status")).to_contain_text(
        "A test copy is on its way to sender@gla.example"
    )
    [test_mail] = smtp.outbox.wait_for(1)
    assert test_mail.to == ["sender@gla.example"]
    assert "spring news" in test_mail.subject and "TEST" in test_mail.subject
    update_url = desk.url.split("?")[0]

    # A second tab watches the progress page from before the send starts.
    watcher = desk.context.new_page()
    watcher.goto(update_url + "/progress")
    expect(watcher.locator("#progress-percent")).to_have_text("0")
    expect(watcher.locator("#progress-pending")).to_have_text("3")
    watcher.evaluate("() => { window.notReloaded = true; }")

    desk.get_by_role("link", name="Send to subscribers").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Send this update?")
    expect(desk.locator(".recipient-count")).to_have_text("3")
    check_accessibility(desk)
    screenshot(desk, "admin-send-confirm")
    assert len(smtp.outbox.messages()) == 1  # nothing sent before the confirmation

    desk.get_by_role("button", name="Yes, send to 3 subscribers").click()
    expect(desk).to_have_url(update_url + "/progress")

    # The watching tab reaches 100 % by polling, without a reload.
    expect(watcher.locator("#progress-percent")).to_have_text("100", timeout=30_000)
    expect(watcher.locator("#progress-bar")).to_have_attribute("value", "3")
    expect(watcher.locator("#progress-sent")).to_have_text("3")
    expect(watcher.get_by_role("status")).to_contain_text("Finished: 3 sent, 0 failed.")
    assert watcher.evaluate("() => window.notReloaded === true")
    check_accessibility(watcher)
    screenshot(watcher, "admin-progress")

    mails = smtp.outbox.wait_for(4)
    assert sorted(m.to[0] for m in mails[1:]) == [
        "one@example.org",
        "three@example.org",
        "two@example.org",
    ]

    desk.goto("/admin")
    expect(desk.get_by_role("row", name=re.compile("spring news"))).to_contain_text("Sent")
    check_accessibility(desk)
    screenshot(desk, "admin-dashboard")


def test_progress_page_works_without_javascript(browser, live_server, session):
    make_staff(session, "editor@gla.example", "editor")
    context = browser.new_context(viewport=DESKTOP, base_url=live_server, java_script_enabled=False)
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    try:
        sign_in(p, "editor@gla.example")
        save_draft(p, "No script needed", "Healthy Living", "Plain words.")
        expect(p.get_by_role("heading", level=1)).to_have_text("Edit draft")
        p.goto(p.url.split("?")[0] + "/progress")
        expect(p.locator("#progress-percent")).to_have_text("0")
        refresh = p.get_by_role("link", name="Refresh the figures")
        expect(refresh).to_be_visible()
        refresh.click()
        expect(p.get_by_role("heading", level=1)).to_have_text("No script needed")
    finally:
        context.close()


def test_editor_is_refused_the_send_page(desk, session):
    make_staff(session, "editor@gla.example", "editor")
    sign_in(desk, "editor@gla.example")
    save_draft(desk, "Editors draft", "Healthy Children", "Words.")
    expect(desk.get_by_role("link", name="Send to subscribers")).to_have_count(0)
    desk.goto(desk.url.split("?")[0] + "/send")
    expect(desk.get_by_role("heading", level=1)).to_have_text("You cannot do this")
    check_accessibility(desk)
    screenshot(desk, "admin-forbidden")


def test_editor_uploads_an_image_and_sees_it_in_the_preview(desk, session, tmp_path):
    import io

    from PIL import Image

    make_staff(session, "images@gla.example", "editor")
    picture = tmp_path / "chart.png"
    buffer = io.BytesIO()
    Image.new("RGB", (200, 120), (29, 79, 145)).save(buffer, "PNG")
    picture.write_bytes(buffer.getvalue())

    sign_in(desk, "images@gla.example")
    desk.get_by_role("link", name="Images").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Images")
    desk.get_by_label("Image file").set_input_files(str(picture))
    desk.get_by_role("button", name="Upload image").click()
    status = desk.get_by_role("status")
    expect(status).to_contain_text("![Describe the image here](/images/")
    markdown = re.search(r"!\[Describe the image here\]\((/images/[^)]+)\)", status.inner_text())
    assert markdown is not None
    for width in (390, 1280):
        desk.set_viewport_size({"width": width, "height": 900})
        assert desk.evaluate("() => document.documentElement.scrollWidth") <= width
        check_accessibility(desk)
        screenshot(desk, f"admin-images-{width}")
    desk.set_viewport_size(DESKTOP)

    save_draft(desk, "A chart", "Healthy Minds", f"See:\n\n![A bar chart]({markdown.group(1)})")
    expect(desk.get_by_role("heading", level=1)).to_have_text("Edit draft")
    preview = desk.frame_locator("iframe[title^='Email preview']")
    image = preview.get_by_role("img", name="A bar chart")
    expect(image).to_be_visible()
    # Loaded under the preview's own CSP: the service's image, from its one URL.
    assert image.evaluate("img => img.naturalWidth") == 200
