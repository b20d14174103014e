"""Under `mailing dev` (SQLite, the in-process worker, the local mail capture): a weekly sign-up
is welcomed, a published update reaches the public archive and the feed, and its email links
there; the weekly subscriber is not sent it one by one."""

from __future__ import annotations

import time

import feedparser
import httpx

from tests.test_dev_command import _outbox_links, _staff_token, dev_server  # noqa: F401


def _outbox_text(base: str, needle: str, wait: float = 20) -> str:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        page = httpx.get(f"{base}/dev/outbox").text
        if needle in page:
            return page
        time.sleep(0.1)  # the worker sends in the background; poll the page a person would reload
    raise AssertionError(f"{needle!r} never reached the dev outbox")


def _sign_up_and_confirm(base: str, email: str, frequency: str) -> None:
    data = {"email": email, "themes": ["healthy-minds"], "consent": "yes", "frequency": frequency}
    assert httpx.post(base + "/subscriptions", data=data).status_code == 303
    _outbox_text(base, email)
    # The outbox shows the newest email first: this sign-up's confirmation link.
    link = _outbox_links(base, "confirm")[0]
    assert httpx.post(link).status_code == 200


def test_dev_welcomes_a_weekly_subscriber_and_publishes_an_update(dev_server):  # noqa: F811
    base, cwd = dev_server
    _sign_up_and_confirm(base, "weekly.dev@example.org", "weekly")
    _outbox_text(base, "one weekly summary, on Saturday mornings")  # the welcome email
    _sign_up_and_confirm(base, "each.dev@example.org", "immediate")

    auth = {"authorization": f"Bearer {_staff_token(cwd)}"}
    body = {"subject": "Dev news", "body": "Hello **dev**.", "themes": ["healthy-minds"]}
    update_id = httpx.post(base + "/admin/updates", json=body, headers=auth).json()["id"]
    assert httpx.post(f"{base}/admin/updates/{update_id}/send", headers=auth).status_code == 202
    deadline = time.monotonic() + 30
    while (state := httpx.get(f"{base}/admin/updates/{update_id}", headers=auth).json())[
        "status"
    ] != "sent":
        assert time.monotonic() < deadline, "the update was not sent"
        time.sleep(0.1)  # polling the status a person would watch
    assert state["recipients"] == 1  # the weekly subscriber waits for Saturday's summary
    _outbox_text(base, f"{base}/updates/{update_id}")  # its "View in your browser" link
    assert f'href="/updates/{update_id}"' in httpx.get(f"{base}/updates").text
    assert "<strong>dev</strong>" in httpx.get(f"{base}/updates/{update_id}").text
    feed = feedparser.parse(httpx.get(f"{base}/updates.atom").content)
    assert not feed.bozo and feed.entries[0].title == "Dev news"
