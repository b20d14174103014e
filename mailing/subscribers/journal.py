"""The erasure journal: an append-only file, kept outside the database and its backups, with one
line per erasure holding only a keyed hash of the address and the time (JSON). Restoring last
night's backup brings back people erased since; `mailing erasures reapply` reads the journal and
erases them again (mailing/subscribers/restore.py), so a restore never undoes an erasure.

A line is written (and fsynced) inside the erasure's transaction, before it commits: a crash
between the two leaves a line for an erasure that did not happen, and re-applying it erases
someone who had asked to be erased, never the reverse. A person who signed up again after their
erasure is left alone: only a record created before the erasure time is erased again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailing.config import get_settings
from mailing.models import utcnow

log = logging.getLogger(__name__)

# Set while the journal itself is being re-applied: those erasures are already in it.
_replaying: ContextVar[bool] = ContextVar("erasure_journal_replaying", default=False)


def path() -> Path:
    return Path(get_settings().erasure_journal)


def record(address_hash: str, *, keep_hash: bool, at: datetime | None = None) -> None:
    """Append one erasure (the keyed hash the suppression list holds, never the address). A
    journal that cannot be written is logged as an error and does not stop the erasure."""
    if _replaying.get():
        return
    line = json.dumps(
        {"at": (at or utcnow()).isoformat(), "hash": address_hash, "keep_hash": keep_hash}
    )
    target = path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.error("erasure journal %s not written (%s): back it up by hand", target, exc.strerror)


@dataclass(frozen=True)
class Entry:
    at: datetime
    keep_hash: bool


def read(source: Path | None = None) -> tuple[dict[str, Entry], int]:
    """The latest erasure per hash, and how many lines could not be read."""
    entries: dict[str, Entry] = {}
    unreadable = 0
    source = source or path()
    if not source.exists():
        return entries, 0
    with source.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                row = json.loads(line)
                entry = Entry(datetime.fromisoformat(row["at"]), bool(row["keep_hash"]))
                address_hash = str(row["hash"])
            except (ValueError, KeyError, TypeError):
                unreadable += 1
                continue
            earlier = entries.get(address_hash)
            if earlier is None or earlier.at < entry.at:
                entries[address_hash] = entry
    return entries, unreadable


@contextmanager
def replaying() -> Iterator[None]:
    token = _replaying.set(True)
    try:
        yield
    finally:
        _replaying.reset(token)
