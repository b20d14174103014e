"""Periodic jobs log at INFO only when they did something: an idle run of every job beat runs
(and `mailing dev` sends every reconcile interval) writes no INFO line; a job that did work
logs once."""

from __future__ import annotations

import logging
import time

import httpx

from tests.conftest import drain_worker
from tests.test_dev_command import _free_port, start_dev


def _run_every_beat_job() -> None:
    from workers.celery_app import app

    for entry in app.conf.beat_schedule.values():
        app.send_task(entry["task"])
    drain_worker()


def _info_lines(caplog) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.INFO and not r.name.startswith("tests")
    ]


def test_an_idle_run_of_the_periodic_jobs_logs_nothing_at_info(client, caplog):
    _run_every_beat_job()  # the first run may do once-a-day work (today's snapshot)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            _run_every_beat_job()
    assert _info_lines(caplog) == []


def _task_runs(base: str, task: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            if sample.name == "mailing_task_seconds_count" and sample.labels["task"] == task:
                return sample.value
    return 0.0


def test_mailing_dev_is_quiet_while_its_periodic_jobs_find_nothing_to_do(tmp_path):
    """Under `mailing dev` (every setting at its default but the interval, so the test is short)
    the reconciler and the weekly-summary job run many times and write not one line."""
    port = _free_port()
    proc = start_dev(tmp_path, port, MAILING_RECONCILE_INTERVAL_SECONDS="0.2")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                runs = [_task_runs(base, f"workers.tasks.{t}") for t in JOBS]
                if min(runs) >= 10:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "dev did not run the jobs"
            time.sleep(0.1)  # polling the job counters, not waiting for an outcome
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    noisy = [line for line in output.splitlines() if any(t in line for t in JOBS)]
    assert noisy == [], noisy


JOBS = ("reconcile", "weekly_digests")


def test_a_periodic_job_that_did_work_logs_once(client, smtp, session, caplog):
    from datetime import timedelta

    import sqlalchemy as sa

    from mailing.models import utcnow
    from tests.subscribers.test_purge import _pending
    from workers.celery_app import app

    _pending(client, smtp, "stale@example.org")
    session.execute(
        sa.text("UPDATE subscriber SET created_at = :t, updated_at = :t WHERE status = 'pending'"),
        {"t": utcnow() - timedelta(days=30)},
    )
    session.commit()
    with caplog.at_level(logging.INFO):
        app.send_task("workers.tasks.purge")
        drain_worker()
        app.send_task("workers.tasks.purge")  # nothing left: quiet
        drain_worker()
    assert [line for line in _info_lines(caplog) if "purge" in line] == [
        "mailing.subscribers.erasure: purge: 1 unconfirmed sign-ups deleted,"
        " 0 unsubscribed reduced to a hash"
    ]


def test_every_job_beat_runs_is_kept_quiet(worker):
    from workers.celery_app import app
    from workers.tasks import PERIODIC

    assert {entry["task"] for entry in app.conf.beat_schedule.values()} == PERIODIC
