"""A send that stops itself (issue 27, point 1; the contract): with at least 200 copies attempted
and more than 5 % of them refused by the relay (5xx) or bounced hard, the send pauses, says why
with figures, and the senders are emailed; a sender may resume it and it then finishes. On the
production defaults (MAILING_ENV=production, the guard's settings at their defaults), through a
real worker and a real SMTP relay that refuses chosen recipients.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mailing.config import get_settings
from mailing.db import session_scope
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

SENDER = "sender@staff.example.org"
ADMIN = "admin@staff.example.org"
EDITOR = "editor@staff.example.org"


def _relay(settings_env: Callable[..., None], server: SinkServer) -> None:
    settings_env(env="production", smtp_host="127.0.0.1", smtp_port=server.port)


def test_a_send_with_one_in_ten_refused_pauses_itself_and_tells_the_senders(
    settings_env: Callable[..., None], worker: Any
) -> None:
    emails = add_subscribers(600, ["healthy-living"], prefix="storm-")
    for role, address in (("sender", SENDER), ("admin", ADMIN), ("editor", EDITOR)):
        make_staff(role, address)
    sink = Sink(refuse={e for i, e in enumerate(emails) if i % 10 == 0})
    with SinkServer(sink) as server:
        _relay(settings_env, server)
        assert get_settings().send_guard_min_attempted == 200  # the defaults
        assert get_settings().send_guard_max_failure_rate == 0.05
        update_id = draft(subject="Storm", themes=["healthy-living"])
        start(update_id)
        wait_until(lambda: update_row(update_id).status.value == "paused", 60, "the pause")
        # Every pause notice owed has gone (none left in the outbox): the sender's and the
        # admin's, and so one wrongly owed to the editor would have too.
        wait_until(
            lambda: (
                sink.recipients()[SENDER] == 1
                and count("notice", "WHERE kind = 'send_paused'") == 0
            ),
            30,
            "the pause notices",
        )
        paused = update_row(update_id)
        # It paused at the first check past the line: each lane checks after its chunk commits,
        # so the other lanes' chunks committed meanwhile count too (the in-flight bound, lanes
        # x chunk); then the lanes still sending finish the chunk each holds, and no more.
        chunk = get_settings().send_commit_chunk
        in_flight = get_settings().smtp_connections * chunk
        assert paused.error is not None and "Paused automatically" in paused.error
        found = re.search(r"(\d+) of (\d+) copies attempted", paused.error)
        assert found, paused.error
        refused, at_pause = int(found.group(1)), int(found.group(2))
        assert 200 <= at_pause <= 200 + chunk + in_flight
        assert f"failed permanently ({refused})" in paused.error and "5 %" in paused.error
        taken, failed = taken_and_failed(update_id)
        assert at_pause <= taken + failed <= at_pause + in_flight
        got = sink.recipients()
        assert got[ADMIN] == 1 and got[EDITOR] == 0
        notice = next(m for to, m in sink.messages() if to == SENDER)
        assert "Storm" in str(notice["Subject"])
        assert count("audit_log", "WHERE action = 'auto-paused' AND staff_id IS NULL") == 1

        # A sender resumes: the rest goes, each once, and the guard does not stop it again.
        from mailing.sending import resume
        from workers.enqueue import publish_update_batches

        with session_scope() as session:
            resume(session, update_id, None, publish_update_batches)
        done = wait_sent(update_id, timeout=120)
    assert done.sent + done.failed == 600 and done.failed == 60
    delivered = sink.recipients()
    assert all(delivered[e] == 1 for i, e in enumerate(emails) if i % 10)
    assert count("audit_log", "WHERE action = 'auto-paused'") == 1


def test_a_send_under_the_limit_or_too_small_to_judge_is_never_paused(
    settings_env: Callable[..., None], worker: Any
) -> None:
    few = add_subscribers(150, ["healthy-minds"], prefix="few-")  # half refused, < 200 tried
    many = add_subscribers(400, ["healthy-places"], prefix="many-")  # 1 in 25 refused: 4 %
    sink = Sink(refuse={e for i, e in enumerate(few) if i % 2} | set(many[::25]))
    with SinkServer(sink) as server:
        _relay(settings_env, server)
        small, large = draft(themes=["healthy-minds"]), draft(themes=["healthy-places"])
        start(small)
        start(large)
        assert wait_sent(small).failed == 75
        assert wait_sent(large).failed == 16
    assert count("audit_log", "WHERE action = 'auto-paused'") == 0
