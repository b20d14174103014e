"""The web's notice publisher (workers/enqueue.NoticePublisher): ids handed over together go out
in one task, a failed publish leaves the rows to the reconciler and does not stop the thread,
and the ids really reach a worker that sends them (the `send_notices` task)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tests.support.helpers import count, subscribe
from workers.enqueue import NoticePublisher


def test_ids_handed_over_together_go_out_in_one_task():
    batches: list[list[int]] = []
    publisher = NoticePublisher(lambda ids: batches.append(list(ids)))
    for notice_id in range(1, 11):
        publisher.submit(notice_id)
    assert publisher.wait(timeout=10)
    assert batches == [list(range(1, 11))]


def test_a_failed_publish_is_left_to_the_reconciler_and_the_thread_goes_on(caplog):
    batches: list[list[int]] = []

    def publish(ids: Sequence[int]) -> None:
        if 1 in ids:
            raise ConnectionError("broker down")
        batches.append(list(ids))

    publisher = NoticePublisher(publish)
    with caplog.at_level(logging.WARNING, logger="workers.enqueue"):
        publisher.submit(1)
        assert publisher.wait(timeout=10)
    assert "the reconciler will re-drive them" in caplog.text
    publisher.submit(2)
    assert publisher.wait(timeout=10)
    assert batches == [[2]]


def test_sign_ups_in_one_burst_are_each_sent_their_email(client, smtp):
    """Through the real publisher and broker to the worker's `send_notices`: one email each."""
    emails = [f"burst{i}@example.org" for i in range(12)]
    for email in emails:
        assert subscribe(client, email).status_code == 202
    received = smtp.outbox.wait_for(len(emails))
    assert sorted(to for m in received for to in m.to) == sorted(emails)


def test_a_confirmation_the_relay_defers_is_retried_on_its_own_and_arrives(
    settings_env, worker, client
):
    """`send_notices` hands a deferred notice to its own `send_notice` task, with retries."""
    from tests.support.sending import Sink, SinkServer, wait_until

    sink = Sink(defer={"deferred@example.org": 1})
    with SinkServer(sink) as relay:
        settings_env(smtp_host="127.0.0.1", smtp_port=relay.port)
        assert subscribe(client, "deferred@example.org").status_code == 202
        assert subscribe(client, "prompt@example.org").status_code == 202
        sink.wait_for(2, timeout=60)
    assert sorted(sink.recipients()) == ["deferred@example.org", "prompt@example.org"]
    # Each row goes with the commit after its email: both sent, both rows gone.
    wait_until(lambda: count("notice") == 0, timeout=10, what="the outbox to empty")
