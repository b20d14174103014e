"""The weekly summary end to end: planned once per week, one email per weekly subscriber who has
updates on their themes, sent exactly once through a real worker and SMTP server, honouring
unsubscribes, with the same headers as an update."""

from __future__ import annotations

from datetime import date, timedelta

from sqlmodel import Session

from mailing.config import get_settings
from mailing.db import get_engine
from mailing.models import utcnow
from mailing.sending import digests
from mailing.sending import summaries as digest_sending
from tests.conftest import drain_worker
from tests.support.helpers import count
from tests.support.residents import confirmed, put_update
from workers.enqueue import enqueue_digest_batch

MINDS, PLACES = "healthy-minds", "healthy-places"


def _saturday() -> date:
    """A Saturday after today, so every update put in its week is in the past of its `now`."""
    return digests.latest_saturday(utcnow()) + timedelta(days=7)


def _run(now, publish=enqueue_digest_batch) -> int:
    with Session(get_engine(), expire_on_commit=False) as session:
        return digest_sending.run(session, now, publish)


def _plan(now) -> None:
    """Plan the week without handing anything to workers (as if beat died just after)."""
    with Session(get_engine()) as session:
        assert digests.plan(session, now) is not None
        session.commit()


def _summaries(smtp):
    return [m for m in smtp.outbox.messages() if m.subject.startswith("Your weekly summary")]


def test_weekly_subscriber_gets_one_summary_of_the_weeks_updates_on_their_themes(client, smtp):
    preferences = confirmed(client, smtp, "weekly@example.net", [MINDS], frequency="weekly")
    confirmed(client, smtp, "each@example.net", [MINDS])
    saturday = _saturday()
    since, until = digests.week_window(saturday)
    mine = put_update("Mine", [MINDS], sent_at=until - timedelta(days=1))
    also = put_update("Also mine", [MINDS, PLACES], sent_at=since + timedelta(minutes=1))
    put_update("Not my theme", [PLACES], sent_at=until - timedelta(days=1))
    put_update("Last week", [MINDS], sent_at=since - timedelta(minutes=1))
    kept = put_update(
        "Kept out of the archive",
        [MINDS],
        sent_at=until - timedelta(days=2),
        published=False,
        body="Given **whole** here.",
    )
    put_update("After", [MINDS], sent_at=until + timedelta(minutes=1))

    assert _run(until - timedelta(minutes=1)) == 0  # not yet Saturday 08:30
    assert _run(until + timedelta(minutes=1)) == 1
    drain_worker()
    [mail] = _summaries(smtp)
    assert mail.to == ["weekly@example.net"]
    assert mail.subject == "Your weekly summary: 3 updates from the Health Inequalities Strategy"
    text = mail.part("plain").replace("\r\n", "\n")
    assert text.index("Mine") < text.index("Also mine")  # newest first, as in the archive
    assert f"http://testserver/updates/{mine}" in text
    assert f"http://testserver/updates/{also}" in text
    for absent in ("Not my theme", "Last week", "After"):
        assert absent not in text
    # An update with no archive page is given whole, with no link to a page that is not there.
    assert "Given whole here." in text and "<strong>whole</strong>" in mail.part("html")
    assert f"/updates/{kept}" not in text
    assert "The first paragraph of the update." in text  # the short summary
    unsubscribe = f"http://testserver/unsubscribe/{preferences.rsplit('/', 1)[1]}"
    assert mail.message["List-Unsubscribe"].startswith("<http://testserver/unsubscribe/")
    assert mail.message["List-Unsubscribe"] != f"<{unsubscribe}>"  # its own purpose's token
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.message["List-Id"]
    assert preferences in text
    # The one-click link in the header works.
    path = mail.message["List-Unsubscribe"].strip("<>").removeprefix("http://testserver")
    assert client.post(path, content=b"List-Unsubscribe=One-Click").status_code == 200


def test_no_summary_in_a_week_with_nothing_for_them(client, smtp):
    confirmed(client, smtp, "quiet@example.net", [MINDS], frequency="weekly")
    saturday = _saturday()
    _, until = digests.week_window(saturday)
    put_update("Places only", [PLACES], sent_at=until - timedelta(days=1))
    assert _run(until + timedelta(minutes=1)) == 0
    drain_worker()
    assert _summaries(smtp) == []
    assert count("weekly_digest") == 0
    assert count("digest_week") == 1


def test_a_summary_goes_once_however_often_beat_runs(client, smtp):
    confirmed(client, smtp, "once@example.net", [MINDS], frequency="weekly")
    _, until = digests.week_window(_saturday())
    put_update("News", [MINDS], sent_at=until - timedelta(days=1))
    for minutes in (1, 2, 3, 60, 60 * 23):
        _run(until + timedelta(minutes=minutes))
        drain_worker()
    # Long after the claim timeout too: nothing is pending, so nothing is re-driven.
    _run(until + timedelta(hours=23, minutes=59))
    drain_worker()
    assert len(_summaries(smtp)) == 1
    assert count("weekly_digest") == 1


def test_summaries_whose_task_was_lost_are_re_driven_once(client, smtp):
    """Beat died after planning (or the broker lost the task): the next run sends them."""
    confirmed(client, smtp, "lost@example.net", [MINDS], frequency="weekly")
    _, until = digests.week_window(_saturday())
    put_update("News", [MINDS], sent_at=until - timedelta(days=1))
    lost: list[tuple[int, int]] = []
    assert _run(until + timedelta(minutes=1), lambda a, b: lost.append((a, b))) == 1
    drain_worker()
    assert _summaries(smtp) == []
    # Within the stall period the row is presumed queued: left alone.
    assert _run(until + timedelta(minutes=1, seconds=10)) == 0
    later = until + timedelta(minutes=1, seconds=get_settings().send_stall_seconds + 1)
    assert _run(later) == 1
    drain_worker()
    assert len(_summaries(smtp)) == 1
    assert _run(later + timedelta(seconds=601)) == 0


def test_unsubscribing_before_it_goes_cancels_the_summary(client, smtp):
    preferences = confirmed(client, smtp, "leaver@example.net", [MINDS], frequency="weekly")
    _, until = digests.week_window(_saturday())
    put_update("News", [MINDS], sent_at=until - timedelta(days=1))
    _plan(until + timedelta(minutes=1))
    assert client.post(preferences, json={"themes": []}).json()["status"] == "unsubscribed"
    _run(until + timedelta(minutes=2))
    drain_worker()
    assert _summaries(smtp) == []
    assert count("weekly_digest", "WHERE status = 'cancelled'") == 1


def test_switching_back_to_each_update_cancels_the_summary(client, smtp):
    preferences = confirmed(client, smtp, "switch@example.net", [MINDS], frequency="weekly")
    _, until = digests.week_window(_saturday())
    put_update("News", [MINDS], sent_at=until - timedelta(days=1))
    _plan(until + timedelta(minutes=1))
    client.post(preferences, json={"frequency": "immediate"})
    _run(until + timedelta(minutes=2))
    drain_worker()
    assert _summaries(smtp) == []


def test_erasing_before_it_goes_removes_the_summary(client, smtp):
    from mailing.models import Subscriber
    from mailing.subscribers import erasure, links
    from mailing.subscribers.tokens import Purpose

    preferences = confirmed(client, smtp, "erased@example.net", [MINDS], frequency="weekly")
    _, until = digests.week_window(_saturday())
    put_update("News", [MINDS], sent_at=until - timedelta(days=1))
    _plan(until + timedelta(minutes=1))
    assert count("weekly_digest") == 1
    with Session(get_engine()) as session:
        subscriber = links.subscriber_for(session, Purpose.MANAGE, preferences.rsplit("/", 1)[1])
        assert isinstance(subscriber, Subscriber)
        erasure.erase(session, subscriber, "request")
        session.commit()
    assert count("weekly_digest") == 0
    _run(until + timedelta(minutes=2))
    drain_worker()
    assert _summaries(smtp) == []


def test_updates_already_received_one_by_one_are_left_out(client, smtp):
    """Someone who switched to weekly mid-week is not sent the same update twice."""
    from tests.support.sending import draft, start, wait_sent

    preferences = confirmed(client, smtp, "mid@example.net", [MINDS])
    update_id = draft("Already had it", "Body", [MINDS])
    start(update_id)
    wait_sent(update_id)
    client.post(preferences, json={"frequency": "weekly"})
    sent_at = utcnow()
    until = digests.send_moment(digests.latest_saturday(sent_at) + timedelta(days=7))
    _run(until + timedelta(minutes=1))
    drain_worker()
    assert _summaries(smtp) == []
    assert count("digest_week") == 1 and count("weekly_digest") == 0


def test_weekly_summary_end_to_end_in_production(client, smtp, settings_env):
    """Every setting at its default but MAILING_ENV=production."""
    from fastapi.testclient import TestClient

    from mailing.web.app import create_app

    settings_env(env="production")
    with TestClient(create_app(), raise_server_exceptions=False) as prod:
        confirmed(prod, smtp, "prod.weekly@example.net", [PLACES], frequency="weekly")
    _, until = digests.week_window(_saturday())
    put_update("Parks", [PLACES], sent_at=until - timedelta(hours=3))
    assert _run(until + timedelta(seconds=30)) == 1
    drain_worker()
    [mail] = _summaries(smtp)
    assert mail.to == ["prod.weekly@example.net"] and "Parks" in mail.part("plain")


def test_a_summary_the_relay_defers_is_retried_with_backoff_and_arrives_once(
    client, smtp, settings_env
):
    """The update path's backoff: a 4xx leaves the summary pending until its retry time, and the
    batch task comes back for it then (before, it waited for beat's re-drive after a stall)."""
    import time

    import sqlalchemy as sa

    from tests.support.sending import PipeliningSink, SinkServer, wait_until

    class TimedSink(PipeliningSink):
        tried: list[float]

        async def handle_RCPT(self, server, session, envelope, address, options):
            self.tried.append(time.monotonic())
            return await super().handle_RCPT(server, session, envelope, address, options)

    confirmed(client, smtp, "busy@example.net", [MINDS], frequency="weekly")
    _, until = digests.week_window(_saturday())
    put_update("News", [MINDS], sent_at=until - timedelta(days=1))
    sink = TimedSink(defer={"busy@example.net": 2})
    sink.tried = []
    with SinkServer(sink) as relay:
        settings_env(
            smtp_host="127.0.0.1",
            smtp_port=relay.port,
            send_retry_backoff=0.2,
            send_retry_backoff_max=1,
        )
        assert _run(until + timedelta(minutes=1)) == 1
        wait_until(lambda: sink.count() >= 1, 30, "the deferred summary to arrive")
        drain_worker()
        assert sink.recipients() == {"busy@example.net": 1}
    assert len(sink.tried) == 3
    # Each retry waited its backoff (full jitter: at least half of 0.2 s, then of 0.4 s).
    assert sink.tried[1] - sink.tried[0] >= 0.1
    assert sink.tried[2] - sink.tried[1] >= 0.2
    with get_engine().connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, attempts, retry_at, error FROM weekly_digest")
        ).one()
    assert (row.status, row.attempts, row.error) == ("sent", 3, None)
    assert row.retry_at is not None
