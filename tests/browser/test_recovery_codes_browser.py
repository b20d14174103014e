"""The recovery codes page in Chromium at 390 px: copy (clipboard), download (.txt, also with
JavaScript off) and print (the print stylesheet leaves only the codes); axe on the page."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from mailing.models import utcnow
from mailing.staff import totp
from tests.browser.conftest import MOBILE, TIMEOUT_MS, check_accessibility
from tests.browser.test_two_factor_browser import password_step
from tests.support.staff import make_staff

pytestmark = pytest.mark.browser


def _to_the_codes(p, session, email: str) -> list[str]:
    make_staff(session, email, "editor")
    password_step(p, email)
    p.get_by_role("link", name="Set up an authenticator app").click()
    secret = p.locator("#totp-secret").inner_text().replace(" ", "")
    p.get_by_label("Code from the app").fill(totp.code_at(secret, totp.step_at(utcnow())))
    p.get_by_role("button", name="Set up").click()
    expect(p.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
    return p.locator("#recovery-codes code").all_inner_texts()


def _context(browser: Any, live_server: str, **options: Any) -> Any:
    context = browser.new_context(viewport=MOBILE, base_url=live_server, **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def test_copy_download_and_print_the_recovery_codes(browser, live_server, session, tmp_path):
    context = _context(browser, live_server)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    p = context.new_page()
    codes = _to_the_codes(p, session, "copier@gla.example")
    check_accessibility(p)
    assert p.evaluate("() => document.documentElement.scrollWidth") <= 390

    p.get_by_role("button", name="Copy the codes").click()
    expect(p.get_by_role("status")).to_contain_text("Copied the codes")
    assert p.evaluate("() => navigator.clipboard.readText()").split() == codes

    with p.expect_download() as download:
        p.get_by_role("button", name="Download as a text file").click()
    assert download.value.suggested_filename == "recovery-codes.txt"
    saved = tmp_path / "codes.txt"
    download.value.save_as(saved)
    assert saved.read_text().splitlines()[-10:] == codes

    expect(p.get_by_role("button", name="Print them")).to_be_visible()
    p.emulate_media(media="print")
    expect(p.locator("#recovery-codes")).to_be_visible()
    for hidden in (".console-nav", ".site-header", ".recovery-actions"):
        expect(p.locator(hidden)).to_be_hidden()
    context.close()


def test_without_javascript_the_download_still_works(browser, live_server, session, tmp_path):
    context = _context(browser, live_server, java_script_enabled=False)
    p = context.new_page()
    codes = _to_the_codes(p, session, "nojs@gla.example")
    # Buttons that need the script are not offered without it.
    expect(p.get_by_role("button", name="Copy the codes")).to_be_hidden()
    with p.expect_download() as download:
        p.get_by_role("button", name="Download as a text file").click()
    saved = tmp_path / "codes.txt"
    download.value.save_as(saved)
    assert saved.read_text().splitlines()[-10:] == codes
    context.close()
