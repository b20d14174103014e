"""The `mailing` command: dev, migrate, serve, worker, beat (and more as the service grows)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from mailing.config import ConfigError, get_settings


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every command checks the settings first and exits with a clear message if unsafe."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            get_settings().check()
            return fn(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"mailing: {exc}", err=True)
            sys.exit(2)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


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
        "mailing.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_config=None,
        access_log=False,
    )


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
@_guarded
def worker(ctx: click.Context) -> None:
    """Run a Celery worker; extra arguments go to Celery."""
    from mailing import logs
    from workers.celery_app import QUEUES, configure

    logs.setup()
    app = configure()
    # No banner on stdout and INFO task events: every line the worker writes is a JSON event.
    argv = ["--quiet", "worker", "--loglevel", "INFO", *ctx.args]
    if not any(a == "-Q" or a.startswith("--queues") for a in ctx.args):
        argv += ["-Q", ",".join(QUEUES)]
    app.worker_main(argv)


@main.command()
@_guarded
def beat() -> None:
    """Run the scheduler for housekeeping tasks."""
    from mailing import logs
    from workers.celery_app import configure

    logs.setup()
    configure().start(["beat", "--schedule", os.path.join(_var_dir(), "celerybeat-schedule")])


def _var_dir() -> str:
    os.makedirs("var", exist_ok=True)
    return "var"


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
    from mailing import devcapture, logs

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

    import uvicorn

    from mailing.web.app import create_app

    base = get_settings().base_url
    click.echo(f"\n  Sign-up page:  {base}/\n  Outbox:        {base}/dev/outbox\n")
    uvicorn.run(create_app(), host=host, port=port, log_config=None)
    if capture is not None:
        capture.stop()


@main.command()
@_guarded
def purge() -> None:
    """Erase expired personal data now (beat runs the same every hour)."""
    from mailing import selfservice
    from mailing.db import session_scope
    from mailing.models import utcnow

    with session_scope() as session:
        result = selfservice.purge(session, utcnow())
    click.echo(
        f"purged {result.unconfirmed} unconfirmed sign-ups and "
        f"{result.retained} unsubscribed subscribers past retention"
    )


@main.group()
def staff() -> None:
    """Manage comms staff."""


@staff.command("create")
@click.argument("email")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["editor", "sender", "admin"]),
    help="what they may do",
)
@click.option("--password", is_flag=True, help="also set a password for the staff console")
@_guarded
def staff_create(email: str, role: str, password: bool) -> None:
    """Create a staff member; prints their API token alone on the last line (shown only once)."""
    from mailing import staff as staff_members
    from mailing.console import WeakPassword
    from mailing.db import session_scope
    from mailing.states import StaffRole

    secret = None
    if password:
        secret = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope() as session:
            member, token = staff_members.create_staff(
                session, email, StaffRole(role), password=secret
            )
    except (staff_members.StaffExists, WeakPassword) as exc:
        click.echo(f"mailing: {exc}", err=True)
        sys.exit(1)
    click.echo(f"created staff member {member.id} ({role}); their API token (shown only once):")
    click.echo(token)


@staff.command("password")
@click.argument("email")
@_guarded
def staff_password(email: str) -> None:
    """Set a staff member's console password (prompted); unlocks them and ends their sessions."""
    from mailing import console
    from mailing.db import session_scope

    secret = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope() as session:
            member = console.find_staff(session, email)
            if member is None:
                raise click.ClickException("no staff member has that address")
            console.set_password(session, member, secret)
    except console.WeakPassword as exc:
        click.echo(f"mailing: {exc}", err=True)
        sys.exit(1)
    click.echo("password set; any console sessions they had are ended")


@main.command()
@click.argument("update_id", type=int)
@_guarded
def send(update_id: int) -> None:
    """Send a drafted update and show progress until it is done."""
    import time

    from mailing import sending, updates
    from mailing.db import session_scope
    from workers.celery_app import configure
    from workers.enqueue import enqueue_update_send

    with session_scope() as session:
        if updates.find(session, update_id) is None:
            click.echo(f"mailing: there is no update {update_id}", err=True)
            sys.exit(1)
    configure()  # fails early, clearly, when no broker is configured
    with session_scope() as session:
        started = sending.start_send(session, update_id, None)
    if started.started:
        enqueue_update_send(update_id)
        click.echo(f"sending update {update_id} to {started.recipients} recipients")
    else:
        click.echo(f"update {update_id} was already sent or sending; showing its progress")
    with session_scope() as session:
        live = sending.progress(session, update_id)
    with click.progressbar(length=max(1, live.recipients), label="sent") as bar:
        shown = 0
        while True:
            with session_scope() as session:
                live = sending.progress(session, update_id)
            done = live.sent + live.failed + live.cancelled
            bar.update(max(0, done - shown))
            shown = max(shown, done)
            if live.status == "sent":
                break
            time.sleep(0.5)
    click.echo(
        f"update {update_id} sent: {live.sent} delivered, {live.failed} failed, "
        f"{live.cancelled} cancelled (unsubscribed meanwhile)"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2525, show_default=True, type=int)
@_guarded
def inbound(host: str, port: int) -> None:
    """Take bounces, complaint reports and mailto: unsubscribes for MAILING_BOUNCE_DOMAIN (SMTP)."""
    from mailing import logs
    from mailing.deliverability.inbound import serve

    logs.setup()
    serve(host, port)


if __name__ == "__main__":
    main()
