"""Staff control over sends, through the contract's API: schedule and unschedule, pause,
resume, cancel, the pinned version of what a sender reviewed; London time across the clock
changes, with a controlled clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailing import clock
from tests.sending.test_redis_faults import HoldingSink
from tests.support.helpers import count
from tests.support.sending import (
    SinkServer,
    add_subscribers,
    update_row,
    wait_sent,
    wait_until,
)
from tests.support.sending import (
    api_staff as make_staff,
)

DRAFT = {"subject": "Parks", "body": "New **parks**.", "themes": ["healthy-places"]}


@pytest.fixture
def sender(database: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_staff('sender', 'sender@staff.example.org')}"}


@pytest.fixture
def editor(database: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_staff('editor', 'editor@staff.example.org')}"}


def _draft(client: Any, auth: dict[str, str]) -> int:
    answer = client.post("/admin/updates", json=DRAFT, headers=auth)
    assert answer.status_code == 201
    return int(answer.json()["id"])


def _in(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def _reconcile(now: datetime) -> Any:
    from mailing import sending
    from mailing.db import session_scope
    from workers.enqueue import publish_notice, publish_update_batches

    with session_scope() as session:
        return sending.reconcile(session, now, publish_update_batches, publish_notice)


# --- Scheduling -------------------------------------------------------------------------------


def test_a_scheduled_update_waits_cannot_be_edited_and_can_be_unscheduled(
    client: Any, sender: dict[str, str]
) -> None:
    update_id = _draft(client, sender)
    when = _in(24)
    answer = client.post(
        f"/admin/updates/{update_id}/schedule", json={"send_at": when}, headers=sender
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "scheduled"
    assert datetime.fromisoformat(body["send_at"]) == datetime.fromisoformat(when)
    edit = client.patch(f"/admin/updates/{update_id}", json={"subject": "X"}, headers=sender)
    assert edit.status_code == 409
    assert "unschedule" in edit.json()["detail"]
    # Due in a day: the reconciler leaves it alone now.
    assert _reconcile(datetime.now(UTC)).started == 0
    back = client.delete(f"/admin/updates/{update_id}/schedule", headers=sender)
    assert back.status_code == 200
    assert (back.json()["status"], back.json()["send_at"]) == ("draft", None)
    assert client.delete(f"/admin/updates/{update_id}/schedule", headers=sender).status_code == 409
    actions = [a for (a,) in _audit(update_id)]
    assert actions == ["drafted", "scheduled", "unscheduled"]


@pytest.mark.parametrize(
    ("send_at", "says"),
    [
        ("2020-01-01T09:00:00+00:00", "passed"),
        ((datetime.now(UTC) + timedelta(days=400)).isoformat(), "a year"),
        ("2030-01-01T09:00:00", "offset"),
        ("next tuesday", "ISO 8601"),
        ("", "ISO 8601"),
    ],
)
def test_a_schedule_in_the_past_too_far_ahead_or_unclear_is_422_and_changes_nothing(
    client: Any, sender: dict[str, str], send_at: str, says: str
) -> None:
    update_id = _draft(client, sender)
    answer = client.post(
        f"/admin/updates/{update_id}/schedule", json={"send_at": send_at}, headers=sender
    )
    assert answer.status_code == 422
    assert says in str(answer.json()["detail"])
    assert update_row(update_id).status.value == "draft"


def test_only_a_sender_schedules_pauses_or_cancels(client: Any, editor: dict[str, str]) -> None:
    update_id = _draft(client, editor)
    for method, path, body in [
        ("post", "schedule", {"send_at": _in(2)}),
        ("delete", "schedule", None),
        ("post", "pause", None),
        ("post", "resume", None),
        ("post", "cancel", None),
    ]:
        kwargs = {"json": body} if body else {}
        answer = client.request(
            method.upper(), f"/admin/updates/{update_id}/{path}", headers=editor, **kwargs
        )
        assert answer.status_code == 403, path
    assert client.post("/admin/updates/999999/pause", headers=editor).status_code == 403


def test_a_due_update_starts_with_the_recipients_of_that_moment(
    client: Any, sender: dict[str, str], smtp: Any
) -> None:
    from mailing.db import session_scope
    from mailing.models import Subscriber
    from mailing.subscribers import rights

    emails = add_subscribers(5, ["healthy-places"], prefix="due")
    update_id = _draft(client, sender)
    send_at = datetime.now(UTC) + timedelta(hours=3)
    answer = client.post(
        f"/admin/updates/{update_id}/schedule",
        json={"send_at": send_at.isoformat()},
        headers=sender,
    )
    assert answer.json()["recipients"] == 5  # who it would reach now
    with session_scope() as session:
        leaving = session.query(Subscriber).filter(Subscriber.email == emails[0]).one()
        rights.unsubscribe(session, leaving, channel="one-click")

    assert _reconcile(send_at - timedelta(seconds=1)).started == 0
    assert update_row(update_id).status.value == "scheduled"
    assert _reconcile(send_at).started == 1
    update = wait_sent(update_id, timeout=60)
    assert update.recipients == 4
    assert count("delivery", f"WHERE update_id = {update_id}") == 4
    mailed = {m.to[0] for m in smtp.outbox.wait_for(4, timeout=30) if "Parks" in m.subject}
    assert emails[0] not in mailed and len(mailed) == 4


@pytest.mark.parametrize(
    ("local", "utc"),
    [
        # Clocks go forward on Sunday 28 March 2027: 09:00 is British Summer Time (UTC+1).
        ("2027-03-27 09:00", "2027-03-27T09:00:00+00:00"),
        ("2027-03-28 09:00", "2027-03-28T08:00:00+00:00"),
        # Clocks go back on Sunday 25 October 2026: 09:00 is Greenwich Mean Time again.
        ("2026-10-24 09:00", "2026-10-24T08:00:00+00:00"),
        ("2026-10-25 09:00", "2026-10-25T09:00:00+00:00"),
        # 01:30 happens twice that morning: the first (summer time) one is meant.
        ("2026-10-25 01:30", "2026-10-25T00:30:00+00:00"),
        ("2026-12-01T09:00", "2026-12-01T09:00:00+00:00"),
        ("2027-06-01 09:00+02:00", "2027-06-01T07:00:00+00:00"),
    ],
)
def test_london_times_become_the_right_instant_across_the_clock_changes(
    local: str, utc: str
) -> None:
    assert clock.parse_local(local) == datetime.fromisoformat(utc)


def test_a_london_time_the_clocks_skip_is_refused() -> None:
    with pytest.raises(clock.NoSuchTime, match="does not exist"):
        clock.parse_local("2027-03-28 01:30")
    assert clock.describe(datetime(2026, 12, 1, 9, tzinfo=UTC)) == "Tue 1 Dec 2026, 09:00 (London)"
    assert clock.describe(datetime(2027, 6, 1, 8, tzinfo=UTC)) == "Tue 1 Jun 2027, 09:00 (London)"


@pytest.mark.parametrize("local", ["2027-03-28 09:00", "2026-10-25 09:00"])
def test_a_send_scheduled_across_a_clock_change_starts_at_london_nine(
    client: Any, sender: dict[str, str], local: str
) -> None:
    """With a controlled clock: not a second before 09:00 London time, and at 09:00 itself."""
    from mailing import sending
    from mailing.db import session_scope

    update_id = _draft(client, sender)
    send_at = clock.parse_local(local)
    schedule_clock = send_at - timedelta(days=3)  # scheduled on the other side of the change
    with session_scope() as session:
        sending.schedule(session, update_id, None, send_at, schedule_clock)
    assert _reconcile(send_at - timedelta(seconds=1)).started == 0
    assert _reconcile(send_at).started == 1
    assert update_row(update_id).status.value in ("sending", "sent")


def test_the_cli_schedules_in_london_time(client: Any, sender: dict[str, str]) -> None:
    from click.testing import CliRunner

    from mailing.cli import main

    update_id = _draft(client, sender)
    next_year = datetime.now(UTC).year + 1
    result = CliRunner().invoke(main, ["send", str(update_id), "--at", f"{next_year}-07-01 09:00"])
    assert result.exit_code == 0, result.output
    assert f"Thu 1 Jul {next_year}, 09:00 (London)" in result.output or "(London)" in result.output
    update = update_row(update_id)
    assert update.status.value == "scheduled"
    assert update.send_at == datetime(next_year, 7, 1, 8, tzinfo=UTC)
    bad = CliRunner().invoke(main, ["send", str(update_id), "--at", "soon"])
    assert bad.exit_code == 1 and "not a date and time" in bad.output


# --- Pause, resume, cancel --------------------------------------------------------------------


@pytest.fixture
def held_relay(settings_env: Callable[..., None], worker: Any) -> Iterator[HoldingSink]:
    """A relay that holds one message mid-chunk once 60 have arrived, until released."""
    sink = HoldingSink(hold_at=60)
    with SinkServer(sink) as server:
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port)
        yield sink
        sink.released.set()


def test_pause_stops_within_a_chunk_resume_sends_the_rest_once(
    client: Any,
    sender: dict[str, str],
    held_relay: HoldingSink,
    settings_env: Callable[..., None],
) -> None:
    from mailing.config import get_settings

    settings_env(send_rate=100)  # slow enough that the pause lands mid-send on any database
    emails = add_subscribers(400, ["healthy-places"], prefix="pause")
    update_id = _draft(client, sender)
    assert client.post(f"/admin/updates/{update_id}/send", headers=sender).status_code == 202
    wait_until(held_relay.holding.is_set, 60, "the relay to hold a message mid-chunk")
    if _sqlite():
        # One writer: the pause can only commit once the chunk holding the lock has.
        held_relay.released.set()
    paused = client.post(f"/admin/updates/{update_id}/pause", headers=sender)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    arrived_at_pause = held_relay.count()
    held_relay.released.set()
    chunk = get_settings().send_commit_chunk
    # Every lane finishes the chunk it holds, then stops (lanes run on PostgreSQL only): the
    # counts settle within lanes x chunk of the pause, below the total.
    lanes = 1 if _sqlite() else get_settings().smtp_connections
    wait_until(
        lambda: (
            client.get(f"/admin/updates/{update_id}", headers=sender).json()["pending"]
            == 400 - held_relay.count()
        ),
        30,
        "the held chunk to settle",
    )
    shown = client.get(f"/admin/updates/{update_id}", headers=sender).json()
    assert shown["status"] == "paused"
    assert shown["sent"] == held_relay.count() <= arrived_at_pause + lanes * chunk
    assert shown["sent"] < 400
    assert client.post(f"/admin/updates/{update_id}/pause", headers=sender).status_code == 409

    resumed = client.post(f"/admin/updates/{update_id}/resume", headers=sender)
    assert resumed.status_code == 200 and resumed.json()["status"] == "sending"
    update = wait_sent(update_id, timeout=60)
    got = held_relay.recipients()
    assert set(got) == set(emails) and max(got.values()) == 1
    assert (update.sent, update.failed) == (400, 0)
    assert [a for (a,) in _audit(update_id)][-3:] == ["sent", "paused", "resumed"]


def test_cancel_stops_the_send_and_cancels_every_delivery_not_yet_sent(
    client: Any,
    sender: dict[str, str],
    held_relay: HoldingSink,
    settings_env: Callable[..., None],
) -> None:
    # A slow send (100 a second) that the cancel lands in the middle of.
    settings_env(send_rate=100)
    add_subscribers(300, ["healthy-places"], prefix="cancel")
    update_id = _draft(client, sender)
    assert client.post(f"/admin/updates/{update_id}/cancel", headers=sender).status_code == 409
    client.post(f"/admin/updates/{update_id}/send", headers=sender)
    wait_until(held_relay.holding.is_set, 60, "the relay to hold a message mid-chunk")
    # A cancel waits for the chunk in flight (its rows are locked until it is settled).
    held_relay.released.set()
    answer = client.post(f"/admin/updates/{update_id}/cancel", headers=sender)
    assert answer.status_code == 200
    wait_until(lambda: count("delivery", "WHERE status = 'pending'") == 0, 30, "no pending")
    shown = client.get(f"/admin/updates/{update_id}", headers=sender).json()
    assert shown["status"] == "cancelled"
    assert shown["sent"] == held_relay.count()
    assert shown["sent"] + shown["cancelled"] == 300
    assert client.post(f"/admin/updates/{update_id}/resume", headers=sender).status_code == 409
    assert "cancelled" in [a for (a,) in _audit(update_id)]


def test_a_scheduled_update_can_be_cancelled_and_never_starts(
    client: Any, sender: dict[str, str]
) -> None:
    update_id = _draft(client, sender)
    send_at = datetime.now(UTC) + timedelta(hours=1)
    client.post(
        f"/admin/updates/{update_id}/schedule",
        json={"send_at": send_at.isoformat()},
        headers=sender,
    )
    assert client.post(f"/admin/updates/{update_id}/cancel", headers=sender).status_code == 200
    assert _reconcile(send_at + timedelta(minutes=5)).started == 0
    assert update_row(update_id).status.value == "cancelled"


# --- What the sender reviewed -----------------------------------------------------------------


def test_a_send_of_a_version_that_changed_since_review_is_409_and_sends_nothing(
    client: Any, sender: dict[str, str], editor: dict[str, str]
) -> None:
    add_subscribers(3, ["healthy-places"], prefix="pin")
    update_id = _draft(client, editor)
    reviewed = client.get(f"/admin/updates/{update_id}", headers=sender).json()["fingerprint"]
    client.patch(f"/admin/updates/{update_id}", json={"body": "Something else"}, headers=editor)
    stale = client.post(
        f"/admin/updates/{update_id}/send", json={"fingerprint": reviewed}, headers=sender
    )
    assert stale.status_code == 409
    assert "changed after you reviewed it" in stale.json()["detail"]
    assert update_row(update_id).status.value == "draft"
    assert count("delivery") == 0
    fresh = client.get(f"/admin/updates/{update_id}", headers=sender).json()["fingerprint"]
    sent = client.post(
        f"/admin/updates/{update_id}/send", json={"fingerprint": fresh}, headers=sender
    )
    assert sent.status_code == 202 and sent.json()["started"] is True


def _sqlite() -> bool:
    from mailing.config import get_settings

    return get_settings().is_sqlite


def _audit(update_id: int) -> list[tuple[str]]:
    import sqlalchemy as sa

    from mailing.db import get_engine

    with get_engine().connect() as conn:
        return [
            (r[0],)
            for r in conn.execute(
                sa.text("SELECT action FROM audit_log WHERE update_id = :u ORDER BY id"),
                {"u": update_id},
            )
        ]
