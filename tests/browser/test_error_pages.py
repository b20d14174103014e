"""The site's own pages in a real Chromium when a resident's network is over the per-IP limit
(429, saying when to try again) and for an address that does not exist (404), with axe-core."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import check_accessibility, screenshot

pytestmark = pytest.mark.browser


def test_a_sign_up_over_the_per_ip_limit_gets_a_page_saying_when_to_try_again(
    page, live_server, settings_env
):
    settings_env(rate_limit_per_ip=2)
    for _ in range(2):
        page.goto("/")
        page.get_by_role("button", name="Sign up").click()
        expect(page.get_by_role("alert")).to_contain_text("There is a problem")
    page.goto("/")
    with page.expect_response(lambda r: r.url.endswith("/subscriptions")) as sent:
        page.get_by_role("button", name="Sign up").click()
    answer = sent.value
    assert answer.status == 429
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    expect(page.get_by_role("heading", level=1)).to_have_text("Too many requests from your network")
    expect(page.get_by_text("Please try again in")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "too-many-requests")


def test_an_unknown_address_gets_the_sites_own_404_page(page, live_server):
    answer = page.goto("/no-such-page")
    assert answer.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page.get_by_role("link", name="see past updates")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "not-found")
