"""The console's storm page: an admin finds what one update suppressed, reinstates them with a
reason (audited), and a form without a reason is refused with the page and changes nothing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mailing.db import get_engine
from mailing.deliverability.suppressions import relay_refused
from tests.staff.test_console import csrf_of, signed_in_client
from tests.support.helpers import count
from tests.support.sending import add_subscribers, draft, start


def _storm(people: int) -> int:
    add_subscribers(people, ["healthy-minds"], prefix="console-storm-")
    update_id = draft(themes=["healthy-minds"])
    start(update_id, enqueue=False)
    with get_engine().connect() as conn:
        ids = list(conn.execute(sa.text("SELECT id FROM delivery")).scalars())
    assert relay_refused(update_id, ids) == people
    return update_id


def test_an_admin_reinstates_what_one_update_suppressed_from_the_console(
    client: Any, session: Any
) -> None:
    update_id = _storm(5)
    admin = signed_in_client(client, session, "admin@gla.example", "admin")
    page = admin.get(f"/admin/storm?update_id={update_id}")
    assert page.status_code == 200
    assert "5 found, 5 may be reinstated" in page.text and "@example.net" not in page.text
    form = {"update_id": str(update_id), "cause": "", "since": "", "until": ""}
    token = csrf_of(page.text)
    refused = admin.post("/admin/storm", data={**form, "csrf_token": token})
    assert refused.status_code == 422 and "Say why" in refused.text
    assert count("subscriber", "WHERE status = 'bounced'") == 5
    done = admin.post(
        "/admin/storm",
        data={**form, "csrf_token": token, "reason": "relay outage", "action": "reinstate"},
    )
    assert done.status_code == 200 and "5 people reinstated" in done.text
    assert count("subscriber", "WHERE status = 'active'") == 5
    assert count("audit_log", "WHERE action = 'reinstated'") == 1


def test_the_storm_page_is_for_admins_only(client: Any, session: Any) -> None:
    sender = signed_in_client(client, session, "sender@gla.example", "sender")
    assert sender.get("/admin/storm").status_code == 403
