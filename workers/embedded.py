"""A real Celery worker running in a thread of this process, for `mailing dev` and the tests."""

from __future__ import annotations

import threading

from celery import Celery
from celery.contrib.testing.worker import TestWorkController

from workers.celery_app import QUEUES


def start_embedded_worker(app: Celery, *, concurrency: int = 1) -> TestWorkController:
    """Start a worker consuming every queue; returns once it is ready to take tasks."""
    ready = threading.Event()
    worker = TestWorkController(
        app=app,
        concurrency=concurrency,
        pool="solo" if concurrency == 1 else "threads",
        queues=list(QUEUES),
        loglevel="WARNING",
        ready_callback=lambda _w: ready.set(),
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="celery-worker", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the embedded Celery worker did not start within 30 seconds")
    return worker


def stop_embedded_worker(worker: TestWorkController) -> None:
    worker.stop()


def start_embedded_schedule(app: Celery, entries: tuple[str, ...]) -> threading.Event:
    """For `mailing dev`, which runs no beat: send these beat_schedule entries' tasks at their
    intervals from a daemon thread. Returns the event that stops it."""
    stop = threading.Event()
    schedule = app.conf.beat_schedule

    def tick(name: str) -> None:
        interval = float(schedule[name]["schedule"])
        while not stop.wait(interval):
            app.send_task(schedule[name]["task"])

    for name in entries:
        threading.Thread(target=tick, args=(name,), name=f"dev-beat-{name}", daemon=True).start()
    return stop
