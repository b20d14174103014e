"""The checks every `mailing` command makes before it starts: the settings are safe, and (for a
command that reads or writes data) the database has the current schema. Each failure is one line
on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from mailing.config import ConfigError, get_settings

NOT_MIGRATED = "the database is not migrated: run `mailing migrate` first"


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every command checks the settings first and exits with a clear message if unsafe."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            get_settings().check()
            return fn(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"mailing: {exc}", err=True)
            sys.exit(2)

    return wrapper


def needs_schema(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`guarded`, and the database must be migrated (checked without creating a SQLite file)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        get_settings().check()  # raises ConfigError: `guarded` below reports it
        problem = schema_problem(get_settings().database_url)
        if problem:
            click.echo(f"mailing: {problem}", err=True)
            sys.exit(1)
        return fn(*args, **kwargs)

    return guarded(wrapper)


def schema_problem(url: str) -> str | None:
    """None when the database's schema is at the migrations' head, else what to do about it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from mailing.db import get_engine
    from mailing.migrate import alembic_config

    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:" and not Path(path).is_file():
            return NOT_MIGRATED  # connecting would create an empty file here
    try:
        with get_engine().connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except sa.exc.SQLAlchemyError as exc:  # the name only: the text may hold the URL
        return f"cannot reach the database ({type(exc).__name__}): is MAILING_DATABASE_URL right?"
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    return None if current == heads else NOT_MIGRATED
