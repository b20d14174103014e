"""Sending an update through the real pipeline: a worker, the run's database and broker, SMTP.

The number of recipients is MAILING_TEST_SEND_N (default 2,000).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.helpers import count
from tests.support.sending import (
    Sink,
    SinkServer,
    add_subscribers,
    draft,
    start,
    update_row,
    wait_sent,
)

N = int(os.environ.get("MAILING_TEST_SEND_N", "2000"))


@pytest.fixture
def relay(settings_env: Callable[..., None], worker: Any) -> Iterator[Sink]:
    """A fresh SMTP sink that the worker hands mail to for this test."""
    with SinkServer() as server:
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port)
        yield server.sink


def test_an_update_reaches_each_matching_active_subscriber_once(relay: Sink) -> None:
    minds = add_subscribers(N // 2, ["healthy-minds"], prefix="minds")
    both = add_subscribers(N - N // 2, ["healthy-places", "healthy-living"], prefix="both")
    add_subscribers(50, ["healthy-children"], prefix="children")
    add_subscribers(30, ["healthy-minds"], status="pending", prefix="pending")
    add_subscribers(30, ["healthy-places"], status="unsubscribed", prefix="gone")
    update_id = draft(themes=["healthy-minds", "healthy-places"])

    assert start(update_id) == N
    update = wait_sent(update_id)
    relay.wait_for(N, timeout=10)

    got = relay.recipients()
    assert sum(got.values()) == N
    assert set(got) == set(minds) | set(both)
    assert max(got.values()) == 1
    assert (update.recipients, update.sent, update.failed) == (N, N, 0)
    assert count("delivery", "WHERE status = 'sent'") == N


def test_sending_twice_sends_nothing_more(relay: Sink) -> None:
    add_subscribers(40, ["healthy-minds"])
    update_id = draft(themes=["healthy-minds"])
    assert start(update_id) == 40
    wait_sent(update_id)
    assert start(update_id) == 40  # not started again: it was no longer a draft
    from tests.conftest import drain_worker

    drain_worker()
    assert relay.count() == 40
    assert count("delivery") == 40


def test_an_update_with_no_recipients_is_sent_at_once(relay: Sink) -> None:
    add_subscribers(5, ["healthy-children"])
    update_id = draft(themes=["healthy-living"])
    assert start(update_id) == 0
    assert update_row(update_id).status.value == "sent"
    assert relay.count() == 0


def test_who_unsubscribes_mid_send_gets_nothing_after(
    relay: Sink, settings_env: Callable[..., None]
) -> None:
    from mailing.db import session_scope
    from mailing.models import Subscriber
    from mailing.subscribers import rights

    settings_env(send_rate=300)  # slow enough to act mid-send
    total = 900
    emails = add_subscribers(total, ["healthy-places"])
    update_id = draft(themes=["healthy-places"])
    start(update_id)
    relay.wait_for(60, timeout=30)

    # Unsubscribe people near the end of the list; note how many mails had arrived at commit.
    leaving = emails[-300::15]
    arrived_at_commit: dict[str, int] = {}
    for email in leaving:
        with session_scope() as session:
            who = session.exec(sa.select(Subscriber).where(Subscriber.email == email)).scalar_one()
            rights.unsubscribe(session, who, channel="one-click")
        arrived_at_commit[email] = relay.count()

    wait_sent(update_id, timeout=60)
    order = [r for r, _ in relay.received]
    for email in leaving:
        for position, rcpt in enumerate(order):
            if rcpt == email:
                assert position < arrived_at_commit[email], f"{email} mailed after unsubscribing"
    update = update_row(update_id)
    cancelled = count("delivery", "WHERE status = 'cancelled'")
    assert cancelled > 0
    assert update.sent + cancelled == total
    assert len(order) == len(set(order)) == update.sent


def test_reconcile_resends_what_a_lost_task_left_pending(relay: Sink) -> None:
    from mailing import sending
    from mailing.config import get_settings
    from mailing.db import session_scope
    from mailing.models import utcnow
    from workers.enqueue import publish_notice, publish_update_batches

    add_subscribers(120, ["healthy-living"])
    update_id = draft(themes=["healthy-living"])
    start(update_id, enqueue=False)  # as if the broker lost the message
    assert update_row(update_id).status.value == "sending"

    # Within the stall period the send is presumed queued: nothing is published twice.
    with session_scope() as session:
        assert (
            sending.reconcile(session, utcnow(), publish_update_batches, publish_notice).redriven
            == 0
        )
    quiet = utcnow() + timedelta(seconds=get_settings().send_stall_seconds + 1)
    with session_scope() as session:
        assert (
            sending.reconcile(session, quiet, publish_update_batches, publish_notice).redriven >= 1
        )
    wait_sent(update_id, timeout=60)
    assert sum(relay.recipients().values()) == 120

    # Running it again, even "much later", changes nothing.
    later = utcnow() + timedelta(hours=2)
    with session_scope() as session:
        assert (
            sending.reconcile(session, later, publish_update_batches, publish_notice).redriven == 0
        )
    assert relay.count() == 120


def test_progress_counts_while_and_after_sending(
    relay: Sink, client: Any, settings_env: Callable[..., None]
) -> None:
    from tests.support.sending import api_staff as make_staff

    settings_env(send_rate=200)
    add_subscribers(300, ["healthy-children"])
    token = make_staff("sender")
    auth = {"Authorization": f"Bearer {token}"}
    update_id = client.post(
        "/admin/updates",
        json={"subject": "S", "body": "B", "themes": ["healthy-children"]},
        headers=auth,
    ).json()["id"]
    assert client.post(f"/admin/updates/{update_id}/send", headers=auth).status_code == 202
    relay.wait_for(20, timeout=30)
    live = client.get(f"/admin/updates/{update_id}", headers=auth).json()
    assert live["status"] in ("sending", "sent")
    assert live["recipients"] == 300
    assert live["sent"] + live["pending"] + live["failed"] == 300
    wait_sent(update_id, timeout=60)
    done = client.get(f"/admin/updates/{update_id}", headers=auth).json()
    assert (done["status"], done["sent"], done["failed"], done["pending"]) == ("sent", 300, 0, 0)


def test_mailing_send_refuses_a_missing_update_clearly(database: str) -> None:
    from click.testing import CliRunner

    from mailing.cli import main

    result = CliRunner().invoke(main, ["send", "999"])
    assert CliRunner().invoke(main, ["send", str(2**40)]).exit_code == 1
    assert result.exit_code == 1
    assert "there is no update 999" in result.output
    assert count("theme_update") == 0


@pytest.mark.skipif(
    not os.environ.get("MAILING_TEST_BROKER_URL"),
    reason="`mailing send` needs a broker another process could reach (MAILING_TEST_BROKER_URL)",
)
def test_mailing_send_sends_and_shows_progress_until_done(relay: Sink) -> None:
    from click.testing import CliRunner

    from mailing.cli import main

    add_subscribers(150, ["healthy-minds"])
    update_id = draft(themes=["healthy-minds"])
    result = CliRunner().invoke(main, ["send", str(update_id)])
    assert result.exit_code == 0, result.output
    assert "150 delivered, 0 failed" in result.output.splitlines()[-1]
    assert sum(relay.recipients().values()) == 150
    again = CliRunner().invoke(main, ["send", str(update_id)])
    assert again.exit_code == 0 and "already sent" in again.output
    assert relay.count() == 150
