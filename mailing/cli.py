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
    argv = ["worker", *ctx.args]
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


if __name__ == "__main__":
    main()
