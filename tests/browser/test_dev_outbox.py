"""/dev/outbox in Chromium: each email's headers, its HTML part as the recipient sees it (its own
strict, sandboxed CSP, inline styles applied) and its text part, on a 390 px phone."""

from __future__ import annotations

from html import unescape

import httpx
import pytest

from mailing.mail import devcapture
from tests.browser.conftest import _console_errors, check_accessibility
from tests.support.helpers import subscribe

pytestmark = pytest.mark.browser


@pytest.fixture
def outbox_on(smtp):
    devcapture.active = smtp  # what `mailing dev` does with its capture
    yield smtp
    devcapture.active = None


def test_the_outbox_shows_headers_html_and_text_and_fits_a_phone(
    page, live_server, client, outbox_on
):
    before = len(outbox_on.outbox.messages())
    subscribe(client, "outbox.reader+a-very-long-local-part-indeed@example.org")
    [mail] = outbox_on.outbox.wait_for(before + 1)[before:]
    page.goto("/dev/outbox")
    section = page.locator(f"section[aria-labelledby='mail-{mail.number}']")
    section.locator("summary", has_text="Headers").click()
    shown = section.locator(".mail-headers").inner_text()
    for name, value in mail.message.items():
        assert name in shown and " ".join(str(value).split()) in " ".join(shown.split()), name
    for name in ("From", "To", "Subject", "Message-ID"):
        assert mail.message[name], name
    section.locator("summary", has_text="Plain-text part").click()
    assert " ".join(mail.part("plain").split())[:60] in " ".join(section.inner_text().split())
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    check_accessibility(page)

    with page.expect_navigation():
        section.get_by_role("link", name="Open the email as the recipient sees it").click()
    assert page.url.endswith(f"/dev/outbox/{mail.number}/html")
    # The HTML part's inline styles apply under its own policy (the site's would block them
    # and report each in the console).
    assert page.locator("[style]").count() > 0
    blocked = [e for e in _console_errors[id(page)] if "Content Security Policy" in e]
    assert blocked == []
    answer = httpx.get(f"{live_server}/dev/outbox/{mail.number}/html")
    csp = answer.headers["content-security-policy"]
    assert "sandbox" in csp and "style-src 'unsafe-inline'" in csp and "script-src" not in csp
    assert answer.headers["cache-control"] == "no-store"
    assert unescape(answer.text) == unescape(mail.part("html"))


def test_the_html_part_of_an_unknown_email_is_404(live_server, outbox_on):
    assert httpx.get(f"{live_server}/dev/outbox/999999/html").status_code == 404
    assert httpx.get(f"{live_server}/dev/outbox/x/html").status_code == 422


def test_outside_mailing_dev_the_outbox_and_its_parts_are_404(live_server):
    assert devcapture.active is None
    for path in ("/dev/outbox", "/dev/outbox/1/html"):
        assert httpx.get(live_server + path).status_code == 404, path


def test_an_updates_list_headers_are_shown_at_desktop_width_too(page, live_server, outbox_on):
    from tests.support.sending import add_subscribers, draft, start, wait_sent

    [address] = add_subscribers(1, ["healthy-minds"], prefix="outboxheaders")
    before = len(outbox_on.outbox.messages())
    body = "See https://example.org/" + "a-long-path/" * 12
    update_id = draft("Outbox headers", body, ["healthy-minds"])
    start(update_id)
    wait_sent(update_id)
    [mail] = [m for m in outbox_on.outbox.wait_for(before + 1)[before:] if address in m.to]
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/dev/outbox")
    section = page.locator(f"section[aria-labelledby='mail-{mail.number}']")
    section.locator("summary", has_text="Headers").click()
    shown = section.locator(".mail-headers dt").all_inner_texts()
    for name in ("From", "To", "Subject", "Message-ID", "List-Unsubscribe"):
        assert name in shown, name
    assert "List-Unsubscribe-Post" in shown and "List-Id" in shown
    check_accessibility(page)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
