"""The guard every command wears: the settings are checked first, and an unsafe configuration
ends the command with a clear message (exit status 2) before it touches anything."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from mailing.config import ConfigError, get_settings


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
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
