"""Undo a storm (issue 27, point 2), on the production defaults with a real worker and relay: a
relay answers 550 to everyone, the send guard pauses the send, every refused person is suppressed
with the cause `relay-5xx`; an admin lists what that update caused, reinstates them (never the
unsubscribe or the complaint in the same window), re-sends the update to the refused copies, a
sender resumes, and everyone active gets exactly one copy. Audited without addresses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from mailing.db import session_scope
from mailing.models import utcnow
from mailing.subscribers.records import by_key
from mailing.subscribers.rights import unsubscribe
from tests.conftest import drain_worker
from tests.support.helpers import count
from tests.support.sending import (
    Sink,
    SinkServer,
    add_subscribers,
    draft,
    start,
    taken_and_failed,
    update_row,
    wait_sent,
    wait_until,
)
from tests.support.sending import (
    api_staff as make_staff,
)


def _leave(address: str, channel: str) -> None:
    with session_scope() as session:
        subscriber = by_key(session, address)
        assert subscriber is not None
        unsubscribe(session, subscriber, channel=channel)


def test_a_relay_that_refused_everyone_is_undone_by_an_admin(
    client: Any, settings_env: Callable[..., None]
) -> None:
    emails = add_subscribers(300, ["healthy-communities"], prefix="storm-")
    admin = {"Authorization": f"Bearer {make_staff('admin')}"}
    sender = {"Authorization": f"Bearer {make_staff('sender')}"}
    since = utcnow() - timedelta(seconds=1)
    left, complained = emails[-1], emails[-2]
    _leave(left, "one-click")
    _leave(complained, "complaint")
    sink = Sink(refuse=set(emails))  # the relay answers 550 to everyone
    with SinkServer(sink) as server:
        settings_env(env="production", smtp_host="127.0.0.1", smtp_port=server.port)
        update_id = draft(themes=["healthy-communities"])
        start(update_id)
        wait_until(lambda: update_row(update_id).status.value == "paused", 60, "the guard")
        drain_worker()  # the lanes finished the chunks they held when the guard paused
        refused = taken_and_failed(update_id)[1]
        assert refused >= 200
        until = utcnow() + timedelta(seconds=1)
        window = {"since": since.isoformat(), "until": until.isoformat()}

        listed = client.get(
            "/admin/suppressions",
            params={"update_id": update_id, "cause": "relay-5xx"},
            headers=admin,
        )
        assert listed.status_code == 200
        body = listed.json()
        assert body["count"] == body["reinstatable"] == refused
        assert "@" not in listed.text  # ids, never addresses
        in_window = client.get("/admin/suppressions", params=window, headers=admin).json()
        causes = {s["cause"] for s in in_window["suppressions"]}
        assert causes == {"relay-5xx", "unsubscribe", "complaint"}
        assert in_window["count"] == refused + 2 and in_window["reinstatable"] == refused

        # Bad asks change nothing.
        assert client.get("/admin/suppressions", headers=admin).status_code == 422
        bogus = {"cause": "spam", **window}
        assert client.get("/admin/suppressions", params=bogus, headers=admin).status_code == 422
        assert client.get("/admin/suppressions", params=window, headers=sender).status_code == 403
        no_reason = client.post("/admin/suppressions/reinstate", json=window, headers=admin)
        assert no_reason.status_code == 422
        assert count("subscriber", "WHERE status = 'bounced'") == refused

        done = client.post(
            "/admin/suppressions/reinstate",
            json={**window, "reason": "relay misconfigured 550 for everyone"},
            headers=admin,
        )
        assert done.status_code == 200 and done.json() == {"reinstated": refused}
        assert count("subscriber", "WHERE status = 'bounced'") == 0
        assert count("subscriber", "WHERE status = 'unsubscribed'") == 2  # never reinstated

        sink.refuse.clear()  # the relay is mended
        resent = client.post(
            f"/admin/updates/{update_id}/resend-failed",
            json={**window, "reason": "relay mended"},
            headers=admin,
        )
        assert resent.status_code == 200 and resent.json() == {"requeued": refused}
        assert client.post(f"/admin/updates/{update_id}/resume", headers=sender).status_code == 200
        final = wait_sent(update_id, timeout=120)
        got = {to: n for to, n in sink.recipients().items() if "@staff." not in to}
    assert final.failed == 0 and final.sent == 298
    assert set(got) == set(emails) - {left, complained}
    assert max(got.values()) == 1
    assert count("audit_log", "WHERE action IN ('reinstated', 'resent-failed')") == 2
    assert count("audit_log", "WHERE detail LIKE '%@%'") == 0


def test_each_suppression_records_its_cause_and_the_update_behind_it(database: str) -> None:
    import sqlalchemy as sa

    from mailing.db import get_engine
    from mailing.deliverability import rules
    from mailing.deliverability.returnpath import Ref, RefKind

    left, bounced, complained = add_subscribers(3, ["healthy-living"], prefix="cause-")
    update_id = draft(themes=["healthy-living"])
    start(update_id, enqueue=False)
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE delivery SET status = 'sent', sent_at = :now"), {"now": utcnow()}
        )
    _leave(left, "one-click")
    with session_scope() as session:
        for address, outcome in ((bounced, "hard"), (complained, "complaint")):
            subscriber = by_key(session, address)
            assert subscriber is not None and subscriber.id is not None
            delivery_id = session.execute(
                sa.text("SELECT id FROM delivery WHERE subscriber_id = :s"), {"s": subscriber.id}
            ).scalar_one()
            ref = Ref(RefKind.DELIVERY, subscriber.id, delivery_id)
            if outcome == "hard":
                rules.hard_bounce(session, ref, "5.1.1", "no such user", utcnow())
            else:
                rules.complaint(session, ref)
    with_update = f"AND suppression_update_id = {update_id}"
    assert count("subscriber", "WHERE suppression_cause = 'unsubscribe'") == 1
    assert count("subscriber", f"WHERE suppression_cause = 'bounce' {with_update}") == 1
    assert count("subscriber", f"WHERE suppression_cause = 'complaint' {with_update}") == 1
