"""Residents' pages in a real Chromium: sign up, confirm from the emailed link, errors, the
invalid-link page, the embeddable snippet on another site, and axe-core on every page."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from mailing.models import Subscriber
from mailing.states import SubscriberStatus
from mailing.subscribers.records import themes_of
from mailing.web.middleware import CSP
from tests.browser.conftest import check_accessibility, screenshot

pytestmark = pytest.mark.browser


def emailed_link(mail, live_server: str, kind: str) -> str:
    found = [u for u in mail.links if u.startswith(f"{live_server}/{kind}/")]
    assert len(found) == 1, mail.links
    return found[0]


def fill_signup(page, email: str, themes: list[str]) -> None:
    page.get_by_label("Email address").fill(email)
    for title in themes:
        page.get_by_label(title, exact=True).check()
    page.get_by_label(re.compile("^Yes, please email me updates")).check()


def test_resident_signs_up_and_confirms_from_the_email(page, live_server, smtp, session):
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign up for updates")
    check_accessibility(page)
    screenshot(page, "signup")

    fill_signup(page, "resident@example.org", ["Healthy Minds", "Healthy Places"])
    page.get_by_role("button", name="Sign up").click()

    expect(page).to_have_url(f"{live_server}/check-your-email")
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    expect(page.get_by_text("resident@example.org")).to_be_visible()  # a typo can be spotted
    assert "resident" not in page.url
    check_accessibility(page)
    screenshot(page, "check-your-email")

    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["resident@example.org"]
    page.goto(emailed_link(mail, live_server, "confirm"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your subscription")
    check_accessibility(page)
    screenshot(page, "confirm")

    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
    expect(page.get_by_role("status")).to_contain_text("Healthy Minds, Healthy Places")
    check_accessibility(page)
    screenshot(page, "confirmed")

    subscriber = session.exec(select(Subscriber)).one()
    assert subscriber.status == SubscriberStatus.ACTIVE
    assert themes_of(session, subscriber.id) == ["healthy-minds", "healthy-places"]


def test_empty_form_shows_an_error_summary_that_links_to_each_field(page, live_server):
    page.goto("/")
    page.get_by_role("button", name="Sign up").click()

    summary = page.get_by_role("alert")
    expect(summary).to_contain_text("There is a problem")
    expect(summary).to_be_focused()  # so a screen reader reads it first, without JavaScript
    expect(page).to_have_title(re.compile("^Error: "))
    check_accessibility(page)
    screenshot(page, "signup-errors")

    summary.get_by_role("link", name="Enter your email address").click()
    expect(page.get_by_label("Email address")).to_be_focused()
    summary.get_by_role("link", name=re.compile("Tick the box")).click()
    expect(page.locator("#consent")).to_be_focused()
    # Each error is also written next to its field, not shown by colour alone.
    expect(page.locator("#email-error")).to_have_text("Error: Enter your email address.")
    expect(page.locator("#email")).to_have_attribute("aria-describedby", "email-error")
    # Nothing was ticked, so nothing comes back ticked.
    expect(page.locator("input[name=themes]:checked")).to_have_count(0)


def test_only_the_fields_in_error_are_summarised_and_answers_are_kept(page, live_server):
    page.goto("/")
    page.get_by_label("Email address").fill("not-an-address")
    page.get_by_label("Healthy Places", exact=True).check()
    page.get_by_label(re.compile("^Yes, please email me updates")).check()
    page.get_by_role("button", name="Sign up").click()

    summary = page.get_by_role("alert")
    expect(summary.get_by_role("link")).to_have_count(1)
    # What the person typed is kept, so they only fix what is wrong.
    expect(page.get_by_label("Email address")).to_have_value("not-an-address")
    expect(page.get_by_label(re.compile("^Yes, please email me updates"))).to_be_checked()
    expect(page.locator("input[name=themes]:checked")).to_have_count(1)
    expect(page.get_by_label("Healthy Places", exact=True)).to_be_checked()
    summary.get_by_role("link").click()
    expect(page.get_by_label("Email address")).to_be_focused()


def test_signing_up_and_confirming_works_without_javascript(browser, live_server, smtp):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, base_url=live_server, java_script_enabled=False
    )
    try:
        page = context.new_page()
        page.goto("/")
        fill_signup(page, "nojs@example.org", [])
        page.get_by_role("button", name="Sign up").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")

        [mail] = smtp.outbox.wait_for(1)
        page.goto(emailed_link(mail, live_server, "confirm"))
        page.get_by_role("button", name="Confirm my subscription").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
        # No theme chosen means all five.
        expect(page.get_by_role("status")).to_contain_text("Healthy Children")
        expect(page.get_by_role("status")).to_contain_text("Healthy Living")
    finally:
        context.close()


def test_invalid_link_page_says_what_to_do_next(page, live_server):
    answer = page.goto("/confirm/this-is-not-a-real-token")
    assert answer.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
    expect(page.get_by_role("link", name="sign up again")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "invalid-link")


def test_focus_is_visible_from_the_keyboard(page, live_server):
    page.goto("/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.get_by_label("Email address").focus()
    outline = page.locator("#email").evaluate(
        "el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]"
    )
    assert outline == ["solid", "3px"]
    button = page.get_by_role("button", name="Sign up")
    button.focus()
    colours = button.evaluate("el => getComputedStyle(el).backgroundColor")
    assert colours == "rgb(255, 221, 0)"  # the yellow focus colour, not the resting green


def test_signup_page_on_a_wide_screen(page, live_server):
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/")
    check_accessibility(page)
    screenshot(page, "signup-desktop")


@pytest.fixture
def strategy_site():
    """The strategy's own site: another origin on loopback, serving pages the test gives it."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"

    def publish(path: str, body_html: str) -> str:
        pages[path] = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<title>Health Inequalities Strategy</title></head>"
            f"<body><main><h1>Health Inequalities Strategy</h1>{body_html}</main></body></html>"
        )
        return origin + path

    publish.origin = origin
    yield publish
    server.shutdown()
    server.server_close()


def test_pages_fit_a_320_pixel_screen_without_sideways_scrolling(page, live_server):
    # WCAG 1.4.10 Reflow: 320 CSS pixels is a 1280-pixel screen zoomed to 400 %.
    page.set_viewport_size({"width": 320, "height": 640})
    for path in (
        "/",
        "/check-your-email",
        "/confirm/bad",
        "/embed/signup-snippet",
        "/erasure-requests",
    ):
        page.goto(path)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 320, (path, width)
    page.goto("/")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 320


def test_snippet_page_offers_the_html_to_copy(page, live_server):
    page.goto("/embed/signup-snippet")
    box = page.get_by_label("The sign-up form's HTML")
    expect(box).to_have_attribute("readonly", "")
    expect(box).to_have_value(re.compile(r'<form class="hisu-signup" method="post"'))
    check_accessibility(page)
    screenshot(page, "embed-snippet")


def test_embedded_snippet_on_the_strategy_page_signs_a_resident_up(
    page, live_server, smtp, strategy_site
):
    snippet = page.request.get(f"{live_server}/embed/signup-snippet.txt").text()
    page.goto(strategy_site("/health-inequalities", snippet))
    check_accessibility(page)  # the snippet is accessible as it is, unstyled
    screenshot(page, "snippet-on-strategy-page")
    fill_signup(page, "embedded@example.org", ["Healthy Children"])
    page.get_by_role("button", name="Sign up").click()

    expect(page).to_have_url(f"{live_server}/check-your-email")
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["embedded@example.org"]


FETCH = """async ([url, email]) => {
    try {
        const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({email, themes: ['healthy-minds'], consent: true})});
        return [r.status, await r.json()];
    } catch (e) { return ['blocked', String(e)]; }
}"""


def test_json_signup_from_an_allowed_origin_passes_cors(
    page, live_server, smtp, settings_env, strategy_site
):
    page.goto(strategy_site("/strategy", "<p>Sign up below.</p>"))
    url = f"{live_server}/subscriptions"

    settings_env(allowed_origins=f"https://www.london.gov.uk, {strategy_site.origin}")
    assert page.evaluate(FETCH, [url, "cors@example.org"]) == [202, {"status": "pending"}]
    [mail] = smtp.outbox.wait_for(1)
    assert mail.to == ["cors@example.org"]

    settings_env(allowed_origins="https://www.london.gov.uk")
    status, _ = page.evaluate(FETCH, [url, "other@example.org"])
    assert status == "blocked"


def test_erasure_request_errors_link_to_the_field(page, live_server):
    # The self-service pages' own journeys are in test_selfservice_pages.py.
    page.goto("/erasure-requests")
    page.get_by_role("button", name="Send me the link").click()
    summary = page.get_by_role("alert")
    expect(summary).to_be_focused()
    summary.get_by_role("link").first.click()
    expect(page.get_by_label("Email address")).to_be_focused()


def test_axe_reports_violations_on_a_broken_page(page):
    """The check is real: under the same strict CSP, a page with known faults fails it."""
    broken = (
        "<!doctype html><html><head><title></title></head><body>"
        "<img src='/x.png'><input type='text'><a href='/'></a>"
        "<p style='color:#ccc;background:#fff'>faint</p></body></html>"
    )
    url = "http://127.0.0.1:9/broken"
    page.route(
        url,
        lambda route: route.fulfill(
            body=broken, content_type="text/html", headers={"content-security-policy": CSP}
        ),
    )
    page.goto(url)
    with pytest.raises(AssertionError) as failure:
        check_accessibility(page)
    report = str(failure.value)
    for rule in ("html-has-lang", "image-alt", "label", "link-name"):
        assert rule in report
    assert "Content Security Policy" in report  # the inline style was blocked and reported
