"""The `mailing` command: dev, migrate, serve, worker, beat (and more as the service grows)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import click

from mailing.cli_guard import guarded as _guarded
from mailing.cli_guard import needs_schema as _needs_schema
from mailing.config import ConfigError, get_settings
from mailing.staff import commands as staff_commands
from mailing.subscribers import import_command
from mailing.subscribers.restore import erasures

if TYPE_CHECKING:
    pass


@click.group()
def main() -> None:
    """Health Inequalities Strategy updates service."""


@main.command()
@_guarded
def migrate() -> None:
    """Bring the database schema up to date."""
    from mailing import migrate as migrations

    migrations.upgrade()
    click.echo("database schema is up to date")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
@_guarded
def serve(host: str, port: int, workers: int) -> None:
    """Serve the API and pages."""
    import uvicorn

    from mailing import logs
    from workers.celery_app import configure

    logs.setup()
    configure()  # fails early, clearly, when no broker is configured
    uvicorn.run(
        "mailing.web.app:serving_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Never let uvicorn rewrite the client from X-Forwarded-For: mailing.web.deps.client_ip
        # alone decides, believing only MAILING_TRUSTED_PROXIES.
        proxy_headers=False,
        log_config=None,
        access_log=False,
    )


def _before_the_pool_forks() -> None:
    """What the tasks import and compile when they first run, done once in the worker's parent:
    each pool process otherwise spent about a second of CPU on it at the start of its first
    send (the modules, the database driver, the email templates)."""
    import psycopg  # noqa: F401  (what the engine's dialect imports on first use)

    import mailing.mail.notices
    import mailing.sending
    import mailing.sending.summaries  # noqa: F401
    from mailing.rendering import compile_emails

    compile_emails()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
@_guarded
def worker(ctx: click.Context) -> None:
    """Run a Celery worker; extra arguments go to Celery."""
    from mailing import logs
    from workers.celery_app import configure
    from workers.names import Queue

    logs.setup()
    app = configure()
    _before_the_pool_forks()

    # No banner on stdout and INFO task events: every line the worker writes is a JSON event.
    argv = ["--quiet", "worker", "--loglevel", "INFO", *ctx.args]
    reserved = None
    if not any(a == "-Q" or a.startswith("--queues") for a in ctx.args):
        argv += ["-Q", ",".join(Queue)]
        # Sign-up mail is never stuck behind a send: besides the pool that takes every queue,
        # one process takes only `transactional` (confirmations, welcomes, links).
        command = [sys.executable, "-m", "mailing.cli", "worker", "-Q", Queue.TRANSACTIONAL.value]
        reserved = subprocess.Popen(  # noqa: S603 (our own command, no input in it)
            [*command, "--concurrency", "1", "-n", "notices@%h"]
        )
    try:
        app.worker_main(argv)
    finally:
        if reserved is not None:
            reserved.terminate()
            try:
                reserved.wait(timeout=30)
            except subprocess.TimeoutExpired:
                reserved.kill()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
@_guarded
def beat(ctx: click.Context) -> None:
    """Run the scheduler for housekeeping tasks (any number of beats may run: each job runs
    once per period, workers/beat_lease.py). Other options go to celery beat (`--loglevel
    INFO` logs each job a beat publishes)."""
    from mailing import logs
    from workers.celery_app import configure

    logs.setup()
    scheduler = ["--scheduler", "workers.beat_lease:LeasedScheduler"]
    configure().start(["beat", *scheduler, *ctx.args])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@_guarded
def dev(host: str, port: int) -> None:
    """Everything in one process on embedded defaults: SQLite, a worker, a mail capture."""
    settings = get_settings()
    if settings.is_production:
        raise ConfigError(
            "`mailing dev` is for development only; it refuses MAILING_ENV=production."
        )
    from mailing import logs
    from mailing.mail import devcapture

    logs.setup(json_lines=False)
    capture = None
    if "MAILING_SMTP_HOST" not in os.environ:
        capture = devcapture.Capture().start()
        devcapture.active = capture
        os.environ["MAILING_SMTP_HOST"] = "127.0.0.1"
        os.environ["MAILING_SMTP_PORT"] = str(capture.port)
    if "MAILING_BASE_URL" not in os.environ:
        os.environ["MAILING_BASE_URL"] = f"http://{host}:{port}"
    get_settings.cache_clear()

    from mailing import migrate as migrations

    migrations.upgrade()
    from workers.celery_app import configure
    from workers.embedded import start_embedded_worker

    app = configure(embedded=True)
    start_embedded_worker(app)
    from workers.embedded import start_embedded_schedule

    # No beat process in dev: every job beat runs is sent from here at the same intervals, so
    # scheduled updates start, summaries go and the purge runs while dev runs.
    start_embedded_schedule(app, tuple(app.conf.beat_schedule))

    import uvicorn

    from mailing.web.app import serving_app

    base = get_settings().base_url
    click.echo(f"\n  Sign-up page:  {base}/\n  Outbox:        {base}/dev/outbox\n")
    uvicorn.run(serving_app(), host=host, port=port, log_config=None, proxy_headers=False)
    if capture is not None:
        capture.stop()


@main.command()
@_needs_schema
def purge() -> None:
    """Erase expired personal data now (beat runs the same every hour)."""
    from mailing.db import session_scope
    from mailing.models import utcnow
    from mailing.subscribers import erasure

    with session_scope() as session:
        result = erasure.purge(session, utcnow())
    click.echo(
        f"purged {result.unconfirmed} unconfirmed sign-ups and "
        f"{result.retained} unsubscribed subscribers past retention"
    )


@main.command()
@click.argument("update_id", type=int)
@click.option(
    "--at",
    "when",
    default=None,
    help="schedule instead: a date and time (ISO 8601; without an offset, Europe/London)",
)
@_needs_schema
def send(update_id: int, when: str | None) -> None:
    """Send a drafted update and show progress until it is done (or schedule it with --at)."""
    from mailing import clock, sending, updates
    from mailing.db import session_scope
    from mailing.errors import MailingError
    from mailing.models import utcnow
    from workers.celery_app import configure
    from workers.enqueue import publish_update_batches

    with session_scope() as session:
        if updates.find(session, update_id) is None:
            click.echo(f"mailing: there is no update {update_id}", err=True)
            sys.exit(1)
    try:
        if when is not None:
            send_at = clock.parse_local(when)
            with session_scope() as session:
                sending.schedule(session, update_id, None, send_at, utcnow())
            click.echo(f"update {update_id} is scheduled for {clock.describe(send_at)}")
            return
        configure()  # fails early, clearly, when no broker is configured
        with session_scope() as session:
            request = sending.request_send(session, update_id, None, publish_update_batches)
    except (MailingError, ValueError) as exc:
        click.echo(f"mailing: {getattr(exc, 'message', exc)}", err=True)
        sys.exit(1)
    if not request.started:
        click.echo(f"update {update_id} was already sent or sending; showing its progress")
    elif request.published:
        click.echo(f"sending update {update_id} to {request.recipients} recipients")
    else:
        click.echo(
            f"update {update_id} is accepted for {request.recipients} recipients; the broker did "
            "not answer, so the workers will start it within a minute"
        )
        return
    _show_progress(update_id)


def _show_progress(update_id: int) -> None:
    import time

    from mailing import sending
    from mailing.db import session_scope

    with session_scope() as session:
        live = sending.progress(session, update_id)
    with click.progressbar(length=max(1, live.recipients), label="sent") as bar:
        shown = 0
        while not live.finished:
            time.sleep(0.5)
            with session_scope() as session:
                live = sending.progress(session, update_id)
            done = live.done
            bar.update(max(0, done - shown))
            shown = max(shown, done)
    click.echo(
        f"update {update_id} {live.status.value}: {live.sent} delivered, {live.failed} failed, "
        f"{live.cancelled} cancelled (unsubscribed meanwhile)"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2525, show_default=True, type=int)
@click.option(
    "--metrics-port",
    default=0,
    type=int,
    help="also serve this process's metrics (bounces, complaints, messages) on 127.0.0.1",
)
@_guarded
def inbound(host: str, port: int, metrics_port: int) -> None:
    """Take bounces, complaint reports and mailto: unsubscribes for MAILING_BOUNCE_DOMAIN (SMTP)."""
    from mailing import logs
    from mailing.deliverability.inbound import serve

    logs.setup()
    if metrics_port:
        # Loopback only: the counters of this process, for a Prometheus on the same host (the
        # API's /metrics serves the API's counters and the database figures).
        from prometheus_client import start_http_server

        from mailing.metrics import REGISTRY

        start_http_server(metrics_port, addr="127.0.0.1", registry=REGISTRY)
    serve(host, port)


main.command("import")(import_command.with_options(_needs_schema(import_command.import_list)))
main.add_command(erasures)
main.add_command(staff_commands.staff)

if __name__ == "__main__":
    main()
