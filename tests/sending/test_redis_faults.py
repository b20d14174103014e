"""Sends that lose their broker or their worker, and finish with nobody stepping in.

Each test runs the production shape in separate processes: a private `redis-server` (broker and
MAILING_REDIS_URL, keeping nothing on disk, so a restart loses every queued task), a
`mailing worker`, and a `mailing beat` whose reconcile schedule is the only recovery there is:
no test calls sending.reconcile itself. The database is the suite's, the relay an SMTP sink.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.sending.test_sending_faults import KILL_N, _kill
from tests.support.helpers import count
from tests.support.sending import (
    Sink,
    SinkServer,
    add_subscribers,
    draft,
    start,
    wait_sent,
    wait_until,
)
from workers.names import Queue, Task

BROKER = os.environ.get("MAILING_TEST_BROKER_URL", "")
REDIS_SERVER = shutil.which("redis-server")

# Short enough for a test, long enough that a healthy send (a commit every 50 mails) never
# looks stalled: reconcile re-drives sends only after this long with no chunk settled anywhere.
STALL = 3
RECONCILE_INTERVAL = 0.5
SEND_RATE = 1500  # a second, counted in the private Redis: the send spans the fault


@dataclass
class HoldingSink(Sink):
    """Holds back one message's DATA once `hold_at` mails have arrived, until released.

    While it is held, the worker sending it is certainly inside a chunk's transaction: its rows
    locked and not yet marked sent. That is where the fault is injected, with no timing luck.
    """

    hold_at: int = 0
    holding: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.holding.is_set() and self.count() >= self.hold_at:
            self.holding.set()
            while not self.released.is_set():  # other connections go on meanwhile
                await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


class PrivateRedis:
    """A redis-server on its own port that this test may kill and start again."""

    def __init__(self, workdir: Path) -> None:
        from mailing.mail.devcapture import _free_port

        assert REDIS_SERVER is not None
        self.port = _free_port()
        self.workdir = workdir
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        import redis

        assert self.proc is None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(REDIS_SERVER),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, 10, f"redis-server on port {self.port}")
        finally:
            client.close()

    def stop(self) -> None:
        """SIGKILL: no shutdown save (there is none configured anyway), every queue is gone."""
        if self.proc is not None:
            _kill(self.proc)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if not BROKER.startswith("redis"):
        pytest.skip(
            "needs a Redis broker run (MAILING_TEST_BROKER_URL=redis://...): the worker and beat "
            "run in other processes"
        )
    if REDIS_SERVER is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: CI must run the Redis fault tests")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Services:
    """`mailing worker` and `mailing beat` subprocesses, each in its own process group, all
    SIGKILLed at teardown; their logs are printed then (pytest shows them when a test fails)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: list[Path] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        mailing = Path(sys.executable).with_name("mailing")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(mailing), *args],
                env=env,
                cwd=self.workdir,  # beat keeps its schedule file in ./var
                start_new_session=True,  # SIGKILL to the group reaches the pool children too
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.running.append((name, proc))
        return proc

    def worker(
        self, env: dict[str, str], concurrency: int, queues: str | None = "updates,housekeeping"
    ) -> subprocess.Popen[bytes]:
        # By default the queues the send batches and the reconcile task are routed to
        # (task_routes); None: every queue, as the default `mailing worker` command.
        args = ["worker", *(["-Q", queues] if queues else []), "--concurrency", str(concurrency)]
        args += ["--pool", "prefork", "--without-gossip", "--without-mingle"]
        return self.spawn("worker", [*args, "--without-heartbeat"], env)

    def beat(self, env: dict[str, str], *options: str) -> subprocess.Popen[bytes]:
        return self.spawn("beat", ["beat", *options], env)

    def database_errors(self) -> list[str]:
        """Error events from the database driver in any service's log: a broker or worker fault
        must never surface as one (a prefork child on its parent's connection would)."""
        found = []
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if '"level": "error"' in line and "psycopg" in line:
                    found.append(line[:300])
        return found

    def stop_all(self) -> None:
        for _, proc in self.running:
            _kill(proc)
        self.running.clear()
        for log in self.logs:
            tail = log.read_text(errors="replace").splitlines()[-25:]
            print(f"--- {log.name} (last {len(tail)} lines)", *tail, sep="\n")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def _env(redis: PrivateRedis, smtp_port: int) -> dict[str, str]:
    """The suite's settings (database, secret keys) plus the private Redis and short timings."""
    return {
        **os.environ,
        "MAILING_BROKER_URL": redis.url(0),
        "MAILING_REDIS_URL": redis.url(1),
        "MAILING_SMTP_HOST": "127.0.0.1",
        "MAILING_SMTP_PORT": str(smtp_port),
        "MAILING_SEND_RATE": str(SEND_RATE),
        "MAILING_SEND_BATCH_SIZE": str(_batch_size()),
        "MAILING_SEND_STALL_SECONDS": str(STALL),
        "MAILING_RECONCILE_INTERVAL_SECONDS": str(RECONCILE_INTERVAL),
    }


def _start_send(redis: PrivateRedis, update_id: int) -> None:
    """start_send here, then publish its batch tasks (as the API would, but to the private
    broker, which the test process's Celery app does not publish to)."""
    from celery import Celery

    from mailing.sending import batch_tasks

    recipients = start(update_id, enqueue=False)
    publisher = Celery("redis-fault-test", broker=redis.url(0))
    try:
        for _ in range(batch_tasks(recipients)):
            publisher.send_task(
                Task.SEND_UPDATE_BATCH.value, args=(update_id,), queue=Queue.UPDATES.value
            )
    finally:
        publisher.close()


def _batch_size() -> int:
    """Ten batches of whole commit chunks, whatever MAILING_TEST_KILL_N is (500 for 5000)."""
    from mailing.config import get_settings

    chunk = get_settings().send_commit_chunk
    return max(1, KILL_N // 10 // chunk) * chunk


def _hold_at() -> int:
    """Two batches in (most still queued), halfway through a commit chunk (a worker process
    sends its batch in delivery order, a chunk at a time)."""
    from mailing.config import get_settings

    return 2 * _batch_size() + get_settings().send_commit_chunk // 2


@dataclass
class HeldSend:
    """An update to KILL_N subscribers, its relay (which holds one mail mid-chunk), and the
    environment for the services that send it."""

    emails: list[str]
    update_id: int
    sink: HoldingSink
    env: dict[str, str]

    def wait_until_held(self) -> None:
        wait_until(self.sink.holding.is_set, 60, f"{self.sink.hold_at} mails to arrive")

    def check_finished(self, services: Services, fault_at: datetime) -> dict[str, int]:
        """Once beat's reconcile finished the send: everyone got it; returns mails a recipient."""
        update = wait_sent(self.update_id, timeout=60)
        got = self.sink.recipients()
        assert set(got) == set(self.emails)  # nothing lost
        assert services.database_errors() == []
        assert (update.status.value, update.sent, update.failed) == ("sent", KILL_N, 0)
        assert count("delivery", "WHERE status = 'sent'") == KILL_N
        return got


@pytest.fixture
def held_send(database: str, private_redis: PrivateRedis) -> Iterator[HeldSend]:
    emails = add_subscribers(KILL_N, ["healthy-living"])
    update_id = draft(themes=["healthy-living"])
    sink = HoldingSink(hold_at=_hold_at())
    with SinkServer(sink) as server:
        yield HeldSend(emails, update_id, sink, _env(private_redis, server.port))
        sink.released.set()


@pytest.mark.slow
def test_redis_restarted_mid_send_the_send_completes_and_nothing_is_lost(
    held_send: HeldSend, private_redis: PrivateRedis, services: Services
) -> None:
    from mailing.models import utcnow

    worker = services.worker(held_send.env, concurrency=2)
    beat = services.beat(held_send.env)
    _start_send(private_redis, held_send.update_id)
    held_send.wait_until_held()
    # A chunk is in flight across the whole outage; every queued (and unacknowledged) batch
    # task dies with Redis, which keeps nothing on disk.
    private_redis.stop()
    arrived = held_send.sink.count()
    private_redis.start()
    restarted_at = utcnow()
    held_send.sink.released.set()

    # Nobody re-enqueues: the worker and beat reconnect by themselves, and once no mail has
    # been marked sent for CLAIM_TIMEOUT, beat's reconcile enqueues the pending ranges again.
    got = held_send.check_finished(services, restarted_at)
    assert worker.poll() is None, "the worker died instead of reconnecting"
    assert beat.poll() is None, "beat died instead of reconnecting"
    # Exactly once, not merely "at most one chunk twice": a mail is repeated only when the
    # transaction holding its row lock is lost after the mail went out (a worker or its database
    # connection dying mid-chunk). Redis going away aborts no transaction: the chunk in flight
    # commits its "sent" marks, the send rate (kept in Redis) fails before a chunk is claimed,
    # and a re-driven range claims only rows still pending and unlocked (FOR UPDATE SKIP LOCKED).
    duplicates = sum(n - 1 for n in got.values())
    print(f"Redis restarted after {arrived} of {KILL_N} mails; duplicates: {duplicates}")
    assert duplicates == 0


@pytest.mark.slow
def test_a_worker_killed_mid_send_is_finished_by_beats_reconcile_without_a_person(
    held_send: HeldSend, private_redis: PrivateRedis, services: Services
) -> None:
    from mailing.config import get_settings
    from mailing.models import utcnow

    services.beat(held_send.env)
    first = services.worker(held_send.env, concurrency=1)
    _start_send(private_redis, held_send.update_id)
    held_send.wait_until_held()
    # SIGKILL mid-chunk: its task stays unacknowledged in Redis (for the visibility timeout,
    # an hour) and its claim, a row lock, ends with its database connection.
    _kill(first)
    killed_at = utcnow()
    arrived_before_restart = held_send.sink.count()
    held_send.sink.released.set()  # its sender is gone: this relay drops the held message
    assert arrived_before_restart < KILL_N, "the send finished before the kill"

    services.worker(held_send.env, concurrency=1)
    # The restarted worker drains the queue; the killed batch's range stays pending until
    # beat's reconcile sees no progress for CLAIM_TIMEOUT and enqueues it again.
    got = held_send.check_finished(services, killed_at)
    # The killed chunk's mails that went out before the kill (half a chunk: see _hold_at) had no
    # committed "sent" mark, so they go again: at most a commit chunk per lane of the worker
    # (it ran one task at a time), and never none, or the kill did not land mid-chunk.
    duplicates = sum(n - 1 for n in got.values())
    print(f"killed after {arrived_before_restart} mails; duplicates afterwards: {duplicates}")
    # At most what it had in flight: a chunk on each of its lanes.
    assert 0 < duplicates <= get_settings().smtp_connections * get_settings().send_commit_chunk
