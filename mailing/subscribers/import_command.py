"""`mailing import FILE --source TEXT [--dry-run]` (subscribers/imports.py does the work): progress
and invalid lines on stderr, the counts as one JSON object on the last line of stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def with_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command's arguments (mailing/cli.py puts its settings guard inside them)."""
    for decorate in (
        click.option("--dry-run", is_flag=True, help="count what would happen; change nothing"),
        click.option("--source", required=True, help="where the list came from (the evidence)"),
        click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path)),
    ):
        command = decorate(command)
    return command


def import_list(path: Path, source: str, dry_run: bool) -> None:
    """Import subscribers from a CSV file; the last line of stdout is a JSON object of counts."""
    from sqlmodel import Session

    from mailing.db import get_engine
    from mailing.subscribers import imports

    def progress(done: int, total: int) -> None:
        if done % 10_000 < imports.CHUNK:
            click.echo(f"{done:,} of {total:,} lines", err=True)

    def problem(p: imports.Problem) -> None:
        click.echo(f"line {p.line}: {p.what}", err=True)

    try:
        report = imports.run(
            lambda: Session(get_engine(), expire_on_commit=False),
            path,
            source,
            dry_run=dry_run,
            publish=_publish_bulk_notices,
            progress=progress,
            on_problem=problem,
        )
    except imports.ImportRefused as exc:
        click.echo(f"mailing: {exc}; nothing was imported", err=True)
        sys.exit(1)
    if dry_run:
        click.echo("dry run: nothing was changed and no one was emailed", err=True)
    click.echo(json.dumps(report.counts.as_dict()))


def _publish_bulk_notices(notice_ids: list[int]) -> None:
    """Hand an import's re-permission emails to the workers; if the broker is not there, the
    rows wait in the outbox and the reconciler publishes them."""
    from workers.celery_app import try_configure
    from workers.enqueue import publish_notices

    try_configure()
    try:
        for i in range(0, len(notice_ids), 100):
            publish_notices(notice_ids[i : i + 100], queue="updates")
    except Exception as exc:  # the name only: the text could quote a URL with a password
        click.echo(
            f"could not hand emails to the workers ({type(exc).__name__}); "
            "the reconciler will within a minute or two",
            err=True,
        )
