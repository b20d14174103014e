"""Handing work to the broker, by task name: the web layer, the CLI and the tasks publish through
here, and this module imports no task (so nothing imports back)."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from queue import Empty, SimpleQueue

from workers.celery_app import app

log = logging.getLogger(__name__)

# Fail fast when the broker is down rather than hold a request for minutes.
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

SEND_NOTICE = "workers.tasks.send_notice"
SEND_NOTICES = "workers.tasks.send_notices"
SEND_UPDATE_BATCH = "workers.tasks.send_update_batch"


def publish_notice(notice_id: int, countdown: float = 0) -> None:
    """A notice row was committed: a worker sends it (after `countdown` seconds)."""
    app.send_task(
        SEND_NOTICE,
        args=(notice_id,),
        queue="transactional",
        countdown=countdown or None,
        retry_policy=PUBLISH_RETRY,
    )


def publish_notices(notice_ids: Sequence[int], queue: str = "transactional") -> None:
    """Several committed notice rows: one task sends them in turn (bulk ones, such as an
    import's re-permission emails, on `updates`, so sign-up mail is never behind them)."""
    app.send_task(SEND_NOTICES, args=(list(notice_ids),), queue=queue, retry_policy=PUBLISH_RETRY)


class NoticePublisher:
    """Publishes the notice ids handed to it from one background thread, those that gather
    within GATHER_SECONDS of each other in one task.

    A request commits its notice row, hands the id over and answers at once: publishing a
    Celery message costs about a millisecond of CPU, which under load was the largest single
    part of a sign-up; gathered, it is paid once for many. An id waits at most GATHER_SECONDS
    for others to join it, so no email waits for a batch to fill. An id lost here (the broker
    down, the process killed) is not an email lost: its row stays in the outbox, and the
    reconciler publishes it again after MAILING_NOTICE_REDRIVE_SECONDS. On a clean exit (the
    app's shutdown, or atexit) the process waits a few seconds at most for what it gathered.
    """

    MAX_BATCH = 100
    GATHER_SECONDS = 0.05  # how long the first id waits for company: short beside an email's way

    def __init__(self, publish: Callable[[Sequence[int]], None] = publish_notices) -> None:
        self._publish = publish
        self._ids: SimpleQueue[int] = SimpleQueue()
        self._lock = threading.Lock()
        self._settled = threading.Condition()
        self._submitted = self._finished = 0
        self._pid = 0  # the thread belongs to the process that started it

    def submit(self, notice_id: int) -> None:
        if self._pid != os.getpid():
            self._start()
        with self._settled:
            self._submitted += 1
        self._ids.put(notice_id)

    def wait(self, timeout: float = 5.0) -> bool:
        """Wait until every id submitted so far was published (or given up to the reconciler);
        False if that took longer than `timeout` seconds."""
        with self._settled:
            target = self._submitted
            return self._settled.wait_for(lambda: self._finished >= target, timeout)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits neither its parent's ids nor its thread.
            self._ids, self._submitted, self._finished = SimpleQueue(), 0, 0
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="notice-publisher", daemon=True).start()
            atexit.register(self.wait)

    def _run(self) -> None:
        while True:
            batch = [self._ids.get()]
            deadline = time.monotonic() + self.GATHER_SECONDS
            while len(batch) < self.MAX_BATCH and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self._ids.get(timeout=left))
                except Empty:
                    break
            try:
                self._publish(batch)
            except Exception:  # the broker is down: the reconciler publishes these rows again
                log.warning(
                    "could not publish %d notices; the reconciler will re-drive them", len(batch)
                )
            with self._settled:
                self._finished += len(batch)
                self._settled.notify_all()


notice_publisher = NoticePublisher()


def publish_update_batches(update_id: int, tasks: int, countdown: float = 0) -> None:
    """`tasks` batch tasks for an update (each pulls chunks until the work runs out)."""
    for _ in range(tasks):
        app.send_task(
            SEND_UPDATE_BATCH,
            args=(update_id,),
            queue="updates",
            countdown=countdown or None,
            retry_policy=PUBLISH_RETRY,
        )


def enqueue_digest_batch(first_id: int, last_id: int, countdown: float = 0) -> None:
    """A range of this week's summaries to send (after `countdown` seconds: a retry)."""
    app.send_task(
        "workers.tasks.send_digest_batch",
        args=(first_id, last_id),
        queue="updates",
        countdown=countdown or None,
        retry_policy=PUBLISH_RETRY,
    )
