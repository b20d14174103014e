"""Every link in every email's HTML part is a clean URL: no leading line break or space, no
control character or whitespace anywhere in it (some mail clients and link scanners do not trim
an href). Every kind of email, built and sent on the production defaults."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from sqlmodel import Session

from mailing.db import get_engine
from mailing.models import utcnow
from mailing.sending import digests
from mailing.sending import summaries as digest_sending
from tests.conftest import drain_worker
from tests.support.helpers import only_link, subscribe
from tests.support.residents import put_update
from tests.support.sending import api_staff as make_staff
from tests.support.sending import wait_sent
from workers.enqueue import enqueue_digest_batch

PLACES = "healthy-places"


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value or "" for name, value in attrs if name == "href"]


def hrefs(html: str) -> list[str]:
    parser = _Hrefs()
    parser.feed(html)
    parser.close()
    return parser.found


def unclean(href: str) -> str | None:
    """What is wrong with this href, or None for a clean absolute URL."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in href):
        return "holds whitespace or a control character"
    parts = urlsplit(href)
    if parts.scheme not in ("https", "http", "mailto"):
        return f"scheme {parts.scheme!r}"
    if parts.scheme != "mailto" and not parts.netloc:
        return "no host"
    return None


def test_unclean_recognises_a_leading_line_break() -> None:
    assert unclean("\r\nhttp://testserver/preferences/x") is not None
    assert unclean(" https://example.org/") is not None
    assert unclean("https://example.org/a?b=1") is None
    assert hrefs('<a style="x"\nhref="https://e.org/">a</a><a href="\r\nhttp://e">b</a>') == [
        "https://e.org/",
        "\r\nhttp://e",
    ]


def _staff(prod: TestClient) -> dict[str, str]:
    return {"authorization": f"Bearer {make_staff('sender', 'links.sender@example.org')}"}


def test_every_href_in_every_kind_of_email_is_a_clean_url(prod: TestClient, smtp: Any) -> None:
    def mail_after(action: Any) -> Any:
        before = len(smtp.outbox.messages())
        action()
        return smtp.outbox.wait_for(before + 1, timeout=30)[before]

    who = "links.reader@example.net"
    confirm = mail_after(lambda: subscribe(prod, who, [PLACES]))
    welcome = mail_after(lambda: prod.post(only_link(confirm, "confirm")))
    drain_worker()
    already = mail_after(lambda: subscribe(prod, who, [PLACES]))
    preferences = only_link(welcome, "preferences")
    export = mail_after(lambda: prod.post(preferences, json={"action": "export"}))
    erase = mail_after(lambda: prod.post(preferences, json={"action": "erase"}))

    staff = _staff(prod)
    body = {
        "subject": "Parks",
        "body": "New [parks](https://example.org/parks).",
        "themes": [PLACES],
    }
    update_id = prod.post("/admin/updates", json=body, headers=staff).json()["id"]
    test_copy = mail_after(
        lambda: prod.post(
            f"/admin/updates/{update_id}/test",
            json={"to": "links.sender@example.org"},
            headers=staff,
        )
    )
    fingerprint = prod.get(f"/admin/updates/{update_id}", headers=staff).json()["fingerprint"]
    update = mail_after(
        lambda: prod.post(
            f"/admin/updates/{update_id}/send", json={"fingerprint": fingerprint}, headers=staff
        )
    )
    wait_sent(update_id)

    weekly = "links.weekly@example.net"
    weekly_confirm = mail_after(lambda: subscribe(prod, weekly, [PLACES], frequency="weekly"))
    mail_after(lambda: prod.post(only_link(weekly_confirm, "confirm")))
    drain_worker()
    saturday = digests.latest_saturday(utcnow()) + timedelta(days=7)
    _, until = digests.week_window(saturday)
    put_update("Weekly parks", [PLACES], sent_at=until - timedelta(hours=3))

    def run_digest() -> None:
        with Session(get_engine(), expire_on_commit=False) as session:
            assert digest_sending.run(session, until + timedelta(seconds=30), enqueue_digest_batch)

    digest = mail_after(run_digest)
    drain_worker()

    kinds = {
        "confirm": confirm,
        "welcome": welcome,
        "already subscribed": already,
        "export link": export,
        "erase link": erase,
        "test copy": test_copy,
        "update": update,
        "weekly summary": digest,
    }
    assert len({m.subject for m in kinds.values()}) == len(kinds)
    problems = []
    for kind, mail in kinds.items():
        found = hrefs(mail.part("html"))
        assert found, f"no links in the {kind} email"
        problems += [(kind, h, why) for h in found if (why := unclean(h)) is not None]
    assert problems == []
