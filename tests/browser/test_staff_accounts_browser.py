"""Staff accounts (issue 25) in a real Chromium, axe-checked: the Staff page with its role and
disable controls, inviting someone (with an error first), and the invitee's one-time set-up
page (with an error first) leading to the second-factor enrolment."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import check_accessibility, screenshot
from tests.browser.test_console_browser import desk, sign_in  # noqa: F401
from tests.support.staff import make_staff

pytestmark = pytest.mark.browser

WELCOME = re.compile(r"https?://[^/\s]+(/admin/welcome/\S+)")


def test_an_admin_invites_someone_who_sets_up_their_account(desk, session, smtp):  # noqa: F811
    make_staff(session, "admin@gla.example", "admin")
    make_staff(session, "editor@gla.example", "editor")
    sign_in(desk, "admin@gla.example")
    desk.goto("/admin/staff")
    expect(desk.get_by_role("heading", level=1)).to_have_text("Staff")
    expect(desk.get_by_label("Role of editor@gla.example")).to_have_value("editor")
    check_accessibility(desk)
    screenshot(desk, "admin-staff-roles")

    desk.get_by_role("link", name="Invite someone").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Invite someone")
    check_accessibility(desk)
    desk.get_by_label("Their work email address").fill("not an address")
    desk.get_by_role("button", name="Send the invitation").click()
    expect(desk.get_by_role("alert")).to_contain_text("correct format")
    expect(desk).to_have_title(re.compile("^Error: "))
    check_accessibility(desk)
    screenshot(desk, "admin-staff-invite-error")

    desk.get_by_label("Their work email address").fill("newcomer@gla.example")
    desk.get_by_label(re.compile("^Sender")).check()
    desk.get_by_role("button", name="Send the invitation").click()
    expect(desk.get_by_role("status")).to_contain_text("The invitation is sent")
    check_accessibility(desk)

    message = [m for m in smtp.outbox.wait_for(1) if "newcomer@gla.example" in m.to][-1]
    link = WELCOME.search(message.part("plain")).group(1)
    desk.context.clear_cookies()
    desk.goto(link)
    expect(desk.get_by_role("heading", level=1)).to_have_text("Set up your account")
    check_accessibility(desk)
    desk.get_by_label("New password").fill("a long and new pass phrase")
    desk.get_by_label("The same password again").fill("a different one entirely")
    desk.get_by_role("button", name="Continue to the second factor").click()
    expect(desk.get_by_role("alert")).to_contain_text("not the same")
    check_accessibility(desk)
    screenshot(desk, "admin-welcome-error")
    desk.get_by_label("New password").fill("a long and new pass phrase")
    desk.get_by_label("The same password again").fill("a long and new pass phrase")
    desk.get_by_role("button", name="Continue to the second factor").click()
    expect(desk).to_have_url(re.compile(r"/admin/account"))
    check_accessibility(desk)

    desk.goto(link)  # used once
    expect(desk.get_by_role("heading", level=1)).to_have_text("This link does not work")
    check_accessibility(desk)


def test_the_sign_in_page_with_single_sign_on_and_its_refusal_page(page, settings_env):
    settings_env(
        oidc_issuer="https://login.example.invalid/tenant/v2.0",
        oidc_client_id="mailing-console",
        oidc_client_secret="a-secret",
        oidc_provider_name="Microsoft",
    )
    page.goto("/admin/login")
    expect(page.get_by_role("link", name="Sign in with Microsoft")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "admin-login-sso")
    page.goto("/admin/login/sso/callback?code=x&state=y")  # no round trip was started here
    expect(page.get_by_role("heading", level=1)).to_have_text("Single sign-on did not work")
    check_accessibility(page)
