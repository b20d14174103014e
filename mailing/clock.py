"""Times as the comms team means them: Europe/London wall-clock time, either side of the clock
changes (last Sundays of March and October). Stored and compared in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")


class NoSuchTime(ValueError):
    """A London time that does not exist (skipped when the clocks go forward)."""


def parse_local(text: str) -> datetime:
    """An ISO 8601 date and time; without an offset it is London time. Returns UTC.

    A time the clocks skip (01:30 on the last Sunday of March) is refused; a time that happens
    twice (01:30 on the last Sunday of October) is the first, summer-time one.
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"not a date and time: {text!r} (e.g. 2026-12-01 09:00)") from exc
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    return from_local(parsed)


def from_local(naive: datetime) -> datetime:
    """A naive London wall-clock time as UTC (see parse_local for the clock changes)."""
    local = naive.replace(tzinfo=LONDON, fold=0)
    back = local.astimezone(UTC).astimezone(LONDON)
    if back.replace(tzinfo=None) != naive:
        raise NoSuchTime(
            f"{naive:%H:%M} on {naive:%a %d %b %Y} does not exist in London (the clocks go "
            "forward): choose another time"
        )
    return local.astimezone(UTC)


def describe(when: datetime) -> str:
    """e.g. 'Tue 1 Dec 2026, 09:00 (London)'."""
    local = when.astimezone(LONDON)
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M} (London)"


def short(when: datetime) -> str:
    """e.g. '01 Dec 2026 09:00', London time (a naive value is UTC, as stored)."""
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return f"{aware.astimezone(LONDON):%d %b %Y %H:%M}"
