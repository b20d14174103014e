"""Second factors in a real Chromium (issue 14): enrolling an authenticator app by reading the
secret from the page, recovery-code sign-in, a passkey registered and used through Chromium's
virtual authenticator, and the re-check before a send; axe-core on every new page."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from mailing.models import StaffSession, Update, utcnow
from mailing.staff import totp
from tests.browser.conftest import TIMEOUT_MS, check_accessibility, screenshot
from tests.browser.test_console_browser import DESKTOP, add_subscribers
from tests.browser.test_console_browser import sign_in as sign_in_with_code
from tests.conftest import reload_settings
from tests.support.staff import PASSWORD, make_staff

pytestmark = pytest.mark.browser


def password_step(p, email: str) -> None:
    p.goto("/admin/login")
    p.get_by_label("Email address").fill(email)
    p.get_by_label("Password").fill(PASSWORD)
    p.get_by_role("button", name="Sign in").click()


def sign_out(p) -> None:
    p.get_by_role("button", name="Sign out").click()
    expect(p.get_by_role("status")).to_contain_text("You have signed out")


@pytest.fixture
def desk(browser: Any, live_server: str) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, base_url=live_server)
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def test_first_sign_in_enrols_an_app_from_the_page_then_a_recovery_code_signs_in(desk, session):
    make_staff(session, "new@gla.example", "editor")
    password_step(desk, "new@gla.example")
    expect(desk.get_by_role("heading", level=1)).to_have_text("Set up a second factor")
    check_accessibility(desk)
    screenshot(desk, "admin-2fa-enrol")

    desk.get_by_role("link", name="Set up an authenticator app").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Set up an authenticator app")
    expect(desk.locator(".qr svg")).to_be_visible()
    check_accessibility(desk)
    screenshot(desk, "admin-2fa-totp")
    secret = desk.locator("#totp-secret").inner_text().replace(" ", "")
    assert totp.valid_secret(secret)

    desk.get_by_label("Code from the app").fill("000000")
    desk.get_by_role("button", name="Set up").click()
    expect(desk.get_by_role("alert")).to_contain_text("That code is not right")
    check_accessibility(desk)
    desk.get_by_label("Code from the app").fill(totp.code_at(secret, totp.step_at(utcnow())))
    desk.get_by_label("A name for it (optional)").fill("Work phone")
    desk.get_by_role("button", name="Set up").click()

    expect(desk.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
    codes = desk.locator("#recovery-codes code").all_inner_texts()
    assert len(codes) == 10
    check_accessibility(desk)
    screenshot(desk, "admin-2fa-recovery-codes")
    desk.get_by_role("link", name=re.compile("continue")).click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Updates")

    sign_out(desk)
    password_step(desk, "new@gla.example")
    expect(desk.get_by_role("heading", level=1)).to_have_text("Confirm it is you")
    check_accessibility(desk)
    screenshot(desk, "admin-2fa-second-factor")
    desk.get_by_label("Code from your authenticator app, or a recovery code").fill(codes[0])
    desk.get_by_role("button", name="Continue").click()
    expect(desk.get_by_role("status")).to_contain_text("You have 9 recovery codes left")
    check_accessibility(desk)
    desk.get_by_role("link", name="Continue").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Updates")


def test_a_passkey_is_registered_and_signs_in_with_a_virtual_authenticator(
    browser, live_server, session
):
    # WebAuthn wants a domain, not an IP address, as its relying party: use localhost, as a
    # browser on the server would, and tell the app that is its address.
    local = live_server.replace("127.0.0.1", "localhost")
    before = os.environ["MAILING_BASE_URL"]
    os.environ["MAILING_BASE_URL"] = local
    reload_settings()
    context = browser.new_context(viewport=DESKTOP, base_url=local)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        p = context.new_page()
        cdp = context.new_cdp_session(p)
        cdp.send("WebAuthn.enable")
        authenticator = cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )["authenticatorId"]
        make_staff(session, "keyholder@gla.example", "editor")
        sign_in_with_code(p, "keyholder@gla.example")
        p.goto("/admin/account")
        expect(p.get_by_role("heading", level=1)).to_have_text("Sign-in settings")
        check_accessibility(p)
        screenshot(p, "admin-2fa-settings")
        p.get_by_label("A name for it (so you can tell your keys apart)").fill("Laptop key")
        p.get_by_role("button", name="Set up a passkey or security key").click()
        expect(p.get_by_role("status")).to_contain_text("Your new second factor is set up.")
        expect(p.get_by_label("Name of this passkey")).to_have_value("Laptop key")
        check_accessibility(p)
        creds = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
        assert len(creds["credentials"]) == 1

        sign_out(p)
        password_step(p, "keyholder@gla.example")
        p.get_by_role("button", name="Use a passkey or security key").click()
        expect(p.get_by_role("heading", level=1)).to_have_text("Updates")
        p.goto("/admin/audit")
        expect(p.get_by_role("table")).to_contain_text("passkey")
    finally:
        context.close()
        os.environ["MAILING_BASE_URL"] = before
        reload_settings()


def test_sending_asks_for_the_second_factor_again_then_sends(desk, session, smtp):
    make_staff(session, "sender@gla.example", "sender")
    add_subscribers(session, {"one@example.org": ["healthy-minds"]})
    update = Update(subject="Spring news", body="Hello.", themes="healthy-minds")
    session.add(update)
    session.commit()
    sign_in_with_code(desk, "sender@gla.example")
    desk.goto(f"/admin/drafts/{update.id}/send")
    session.execute(sa.update(StaffSession).values(factor_at=utcnow() - timedelta(minutes=11)))
    session.commit()
    desk.get_by_role("button", name=re.compile("Yes, send")).click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Confirm it is you")
    check_accessibility(desk)
    screenshot(desk, "admin-2fa-reauth")
    from tests.support.staff import next_code

    desk.get_by_label("Code from your authenticator app, or a recovery code").fill(
        next_code("sender@gla.example")
    )
    desk.get_by_role("button", name="Confirm and continue").click()
    expect(desk).to_have_url(re.compile(rf"/admin/drafts/{update.id}/progress"))
