"""Reading an import file (subscribers/imports.py): streamed, every line a Row or the Problem that
makes it invalid, and the whole file refused (ImportRefused) if it is not a readable CSV with
an `email` column. A Problem names a line and what was wrong, never the cell's content.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from mailing import clock
from mailing.states import Frequency
from mailing.subscribers.addresses import Address, InvalidAddress, normalise
from mailing.themes import UnknownTheme, normalise_themes

MAX_CELL_BYTES = 1024 * 1024  # a larger cell refuses the file: memory stays bounded
MAX_WORDING = 10_000
MAX_SOURCE = 200
COLUMNS = ("email", "themes", "frequency", "consented_at", "consent_wording")


class ImportRefused(Exception):
    """The file cannot be imported at all; nothing was changed. The message says why."""


@dataclass(frozen=True)
class Problem:
    line: int
    what: str


@dataclass(frozen=True)
class Row:
    line: int
    address: Address
    themes: list[str]
    frequency: Frequency
    consented_at: datetime | None
    wording: str | None


def check_source(source: str) -> str:
    cleaned = source.strip()
    if not cleaned or len(cleaned) > MAX_SOURCE or any(ord(c) < 32 for c in cleaned):
        raise ImportRefused(
            f"--source must say where the list came from, in 1 to {MAX_SOURCE} characters "
            "on one line"
        )
    return cleaned


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, cells) for every record after the header; ImportRefused for
    a file that is unreadable, not UTF-8 text, not CSV, or has no `email` column."""
    previous = csv.field_size_limit(MAX_CELL_BYTES)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            try:
                header = next(reader, None)
                if header is None:
                    raise ImportRefused("the file is empty: it needs a header row with `email`")
                names = [h.strip().lower() for h in header]
                if "email" not in names:
                    raise ImportRefused(
                        "the first row must be a header naming the columns, with `email` among "
                        f"them (and optionally {', '.join(COLUMNS[1:])}); found none called email"
                    )
                start = reader.line_num + 1
                for cells in reader:
                    yield start, cells
                    start = reader.line_num + 1
            except csv.Error as exc:
                raise ImportRefused(
                    f"line {reader.line_num}: this is not a CSV file we can read ({exc})"
                ) from exc
    except UnicodeDecodeError as exc:
        raise ImportRefused("the file is not UTF-8 text (is it a CSV file?)") from exc
    except OSError as exc:
        raise ImportRefused(f"cannot read the file: {exc.strerror or exc}") from exc
    finally:
        csv.field_size_limit(previous)


def header_of(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [h.strip().lower() for h in next(csv.reader(handle))]


def check_file(path: Path) -> int:
    """Read the whole file once; ImportRefused if it cannot be imported. Returns its data lines."""
    return sum(1 for _ in _records(path))


def rows(path: Path, now: datetime) -> Iterator[Row | Problem]:
    """Every data line as a Row to import or the Problem that makes it invalid (blank lines are
    skipped)."""
    names = header_of(path)
    index = {name: names.index(name) for name in COLUMNS if name in names}
    for line, cells in _records(path):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(names):
            yield Problem(line, "more cells than the header has columns")
            continue
        cell = {name: cells[i] if i < len(cells) else "" for name, i in index.items()}
        yield parse(line, cell, now)


def parse(line: int, cell: dict[str, str], now: datetime) -> Row | Problem:
    try:
        address = normalise(cell.get("email", ""))
    except InvalidAddress:
        return Problem(line, "not a valid email address")
    raw_themes = [t.strip().lower() for t in cell.get("themes", "").split(";") if t.strip()]
    try:
        themes = normalise_themes(raw_themes)
    except UnknownTheme:
        return Problem(line, "a theme that is not one of the five slugs")
    raw_frequency = cell.get("frequency", "").strip().lower() or Frequency.IMMEDIATE.value
    if raw_frequency not in Frequency.__members__.values():
        return Problem(line, "frequency must be immediate or weekly")
    consented_at = None
    if raw_when := cell.get("consented_at", "").strip():
        try:
            consented_at = clock.parse_local(raw_when)
        except ValueError:
            return Problem(line, "consented_at is not an ISO 8601 date and time")
        if consented_at > now + timedelta(days=1):
            return Problem(line, "consented_at is in the future")
    wording = cell.get("consent_wording", "").strip() or None
    if wording is not None:
        if "\x00" in wording:
            return Problem(line, "consent_wording holds a NUL character")
        if len(wording) > MAX_WORDING:
            return Problem(line, f"consent_wording is longer than {MAX_WORDING:,} characters")
    return Row(line, address, themes, Frequency(raw_frequency), consented_at, wording)
