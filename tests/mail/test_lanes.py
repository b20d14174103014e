"""Many relay connections per worker (mailing/mail/lanes.py): each lane a thread with its own
connection and its own chunk, a global cap held through leases, and one hung connection never
stalling the others. PostgreSQL only: on SQLite one write lock means one lane."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import PG_SERVER
from tests.support.helpers import count
from tests.support.sending import (
    PipeliningSink,
    SinkServer,
    add_subscribers,
    draft,
    start,
    wait_sent,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not PG_SERVER, reason="lanes run on PostgreSQL (SKIP LOCKED); SQLite has one writer"
)


class HangingSink(PipeliningSink):
    """A relay that leaves the first connection to reach DATA hanging (no answer) until
    `release` is set, then answers it 451; every other connection works."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.hung: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.hung is None:
                self.hung = session
        if session is self.hung:
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 120)
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


class CountingSink(PipeliningSink):
    """Counts the connections that are inside DATA at once (each message takes 10 ms)."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.most = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        await asyncio.sleep(0.01)
        with self.lock:
            self.active -= 1
        return await super().handle_DATA(server, session, envelope)


def test_one_hung_connection_never_stalls_the_other_lanes(
    settings_env: Callable[..., None], worker: Any
) -> None:
    emails = add_subscribers(400, ["healthy-minds"])
    sink = HangingSink()
    with SinkServer(sink) as server:
        settings_env(
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_connections=4,
            send_commit_chunk=10,
            smtp_timeout=60,
            send_retry_backoff=0.2,
            send_retry_backoff_max=1,
        )
        update_id = draft(themes=["healthy-minds"])
        start(update_id)
        try:
            # Everything but the hung chunk arrives while that connection still hangs.
            wait_until(lambda: sink.count() >= 400 - 10, 60, "the other lanes to send the rest")
            assert sink.hung is not None and not sink.release.is_set()
            assert count("delivery", "WHERE status = 'sent'") >= 400 - 10
        finally:
            sink.release.set()
        update = wait_sent(update_id, timeout=60)
        got = sink.recipients()
    assert set(got) == set(emails) and max(got.values()) == 1
    assert (update.sent, update.failed) == (400, 0)


def test_the_global_cap_holds_however_many_lanes_a_worker_has(
    settings_env: Callable[..., None], worker: Any
) -> None:
    emails = add_subscribers(300, ["healthy-places"])
    sink = CountingSink()
    with SinkServer(sink) as server:
        settings_env(
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_connections=8,
            smtp_connections_total=2,
            send_commit_chunk=10,
        )
        update_id = draft(themes=["healthy-places"])
        start(update_id)
        update = wait_sent(update_id, timeout=90)
        got = sink.recipients()
    assert set(got) == set(emails) and max(got.values()) == 1
    assert (update.sent, update.failed) == (300, 0)
    assert sink.most == 2  # two lanes sent side by side, never a third


def test_lanes_send_side_by_side_on_the_defaults(
    settings_env: Callable[..., None], worker: Any
) -> None:
    """MAILING_SMTP_CONNECTIONS at its default: many connections busy at once."""
    from mailing.config import get_settings

    emails = add_subscribers(1200, ["healthy-living"])
    sink = CountingSink()
    with SinkServer(sink) as server:
        settings_env(smtp_host="127.0.0.1", smtp_port=server.port)
        assert get_settings().smtp_connections == 24
        update_id = draft(themes=["healthy-living"])
        start(update_id)
        update = wait_sent(update_id, timeout=120)
        got = sink.recipients()
    assert set(got) == set(emails) and max(got.values()) == 1
    assert update.sent == 1200
    assert sink.most >= 4
