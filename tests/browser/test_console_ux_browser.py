"""Issue 26's console pages in a real Chromium at 390 and 1280 px, each checked with axe and for
text contrast: staff and account pages fit a phone, the help and weekly-summary pages, deleting
a draft, duplicating an update, a cancelled send's grey bar, and the figures page with no data."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from mailing.models import Delivery, Update
from mailing.states import DeliveryStatus, UpdateStatus
from tests.browser import test_console_browser as console
from tests.browser.conftest import check_accessibility, screenshot
from tests.browser.test_console_browser import add_subscribers, save_draft, sign_in
from tests.support.staff import make_staff

pytestmark = pytest.mark.browser
desk = console.desk  # the desktop-sized page fixture


def fits(p: Any, width: int) -> None:
    """The page itself never scrolls sideways (wide tables scroll in their own region)."""
    overflow = p.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= width, f"{p.url} is {overflow} px wide on a {width} px screen"


def pixel(p: Any, element: Any, across: float) -> list[int]:
    """The colour drawn at `across` of an element's width, half-way down, read from a real
    screenshot (a progress bar's value part cannot be read from computed styles)."""
    png = base64.b64encode(element.screenshot()).decode()
    blank = p.context.new_page()  # about:blank: no CSP in the way of a data: image
    try:
        rgba: list[int] = blank.evaluate(
            """async ([data, across]) => {
                const img = new Image();
                img.src = "data:image/png;base64," + data;
                await img.decode();
                const c = document.createElement("canvas");
                c.width = img.width; c.height = img.height;
                const ctx = c.getContext("2d");
                ctx.drawImage(img, 0, 0);
                const x = Math.floor(img.width * across), y = Math.floor(img.height / 2);
                return Array.from(ctx.getImageData(x, y, 1, 1).data);
            }""",
            [png, across],
        )
    finally:
        blank.close()
    return rgba[:3]


def both(desk: Any, page: Any, path: str, name: str) -> None:
    for p, width, suffix in ((desk, 1280, ""), (page, 390, "-phone")):
        p.goto(path)
        fits(p, width)
        check_accessibility(p)
        screenshot(p, name + suffix)


def test_staff_and_account_pages_fit_a_phone(desk, page, session):
    make_staff(session, "admin@gla.example", "admin")
    make_staff(session, "someone.with.a.long.address@health-inequalities.gla.example", "editor")
    sign_in(desk, "admin@gla.example")
    sign_in(page, "admin@gla.example")
    for path, name in (
        ("/admin/staff", "admin-staff-fit"),
        ("/admin/account", "admin-account-fit"),
        ("/admin/audit", "admin-audit-fit"),
    ):
        both(desk, page, path, name)


def test_help_weekly_summary_and_empty_figures(desk, page, session):
    make_staff(session, "editor@gla.example", "editor")
    sign_in(desk, "editor@gla.example")
    sign_in(page, "editor@gla.example")
    desk.get_by_role("link", name="Help").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Writing and sending updates")
    both(desk, page, "/admin/help", "admin-help")
    desk.get_by_role("link", name="Weekly summary").click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("The next weekly summary")
    both(desk, page, "/admin/weekly-summary", "admin-weekly-summary")
    both(desk, page, "/admin/figures", "admin-figures-empty")
    expect(desk.get_by_text("Nobody is subscribed yet")).to_be_visible()
    expect(desk.locator("figure.chart")).to_have_count(0)


def test_duplicate_then_delete_a_draft(desk, page, session):
    make_staff(session, "editor@gla.example", "editor")
    sign_in(desk, "editor@gla.example")
    sign_in(page, "editor@gla.example")
    save_draft(desk, "Keep me", "Healthy Living", "Some words.")
    expect(desk.get_by_role("heading", level=1)).to_have_text("Edit draft")
    desk.get_by_role("button", name="Duplicate as a new draft").click()
    expect(desk.get_by_role("status")).to_contain_text("copied from the update you chose")
    copy_url = desk.url.split("?")[0]
    # The preview is a sandboxed iframe, which Chromium runs in its own process. A click sent in
    # the same frame as the scroll that brings the link into view is routed by the hit-test
    # regions from before the scroll, where the preview was: the click lands in the preview and
    # nothing navigates. Scroll first, let the compositor draw twice, then click.
    link = desk.get_by_role("link", name="Delete this draft…")
    link.scroll_into_view_if_needed()
    desk.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    link.click()
    expect(desk.get_by_role("heading", level=1)).to_have_text("Delete this draft?")
    both(desk, page, copy_url + "/delete", "admin-delete-draft")
    desk.get_by_role("button", name="Yes, delete the draft").click()
    expect(desk.get_by_role("status")).to_contain_text("The draft is deleted.")
    expect(desk.get_by_role("row", name=re.compile("Keep me"))).to_have_count(1)


def test_a_cancelled_send_shows_a_grey_bar_not_a_full_green_one(desk, page, session):
    from tests.support.sending import start

    make_staff(session, "sender@gla.example", "sender")
    add_subscribers(session, {f"p{i}@example.org": ["healthy-minds"] for i in range(4)})
    sign_in(desk, "sender@gla.example")
    sign_in(page, "sender@gla.example")
    save_draft(desk, "Stopped news", "Healthy Minds", "Words.")
    update_id = int(re.search(r"/admin/drafts/(\d+)", desk.url).group(1))
    start(update_id, enqueue=False)  # started, no worker told: it stays where we put it
    session.expire_all()
    first = session.exec(select(Delivery).where(Delivery.update_id == update_id)).first()
    first.status = DeliveryStatus.SENT
    session.commit()
    desk.goto(f"/admin/drafts/{update_id}/progress")
    expect(desk.locator("#progress-refresh")).to_contain_text("updates by itself")
    desk.get_by_role("link", name="Cancel the send…").click()
    desk.get_by_role("button", name=re.compile("^Yes, cancel")).click()
    expect(desk.locator("#progress-summary")).to_have_text(
        "1 of 4 sent before it was cancelled; 3 not sent."
    )
    bar = desk.locator("#progress-bar")
    expect(bar).to_have_class(re.compile("send-progress-stopped"))
    expect(bar).to_have_attribute("value", "1")
    assert pixel(desk, bar, 0.1) == [80, 90, 95]  # the part that went: grey, not green
    assert pixel(desk, bar, 0.9) == [243, 242, 241]  # the rest: the empty track
    expect(desk.locator("#progress-refresh")).not_to_contain_text("updates by itself")
    session.expire_all()
    assert session.get(Update, update_id).status == UpdateStatus.CANCELLED
    both(desk, page, f"/admin/drafts/{update_id}/progress", "admin-progress-cancelled")
