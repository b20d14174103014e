"""Erasure survives a restore (issue 27, point 4): an erasure is journalled outside the database;
last night's backup, restored with the real tools (pg_dump / pg_restore, or a copy of the SQLite
file), brings the erased person back, and `mailing erasures reapply` (a subprocess on the
production defaults) erases them again, restores their suppression hash and touches no one else.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from mailing.db import reset_engine, session_scope
from mailing.models import utcnow
from mailing.subscribers import journal, links
from mailing.subscribers.records import address_hash, by_key, is_suppressed
from mailing.subscribers.restore import reapply
from mailing.subscribers.tokens import Purpose
from tests.conftest import PG_SERVER
from tests.support.helpers import count
from tests.support.sending import add_subscribers

MAILING = str(Path(sys.executable).with_name("mailing"))


def _plain(url: str) -> str:
    plain = sa.engine.make_url(url).set(drivername="postgresql")
    return plain.render_as_string(hide_password=False)


def _copy(source: str, target: str) -> None:
    """SQLite's online backup, page by page under its lock: safe with other connections open."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _backup(url: str, to: Path) -> None:
    if url.startswith("postgresql"):
        subprocess.run(["pg_dump", "-Fc", "-f", str(to), _plain(url)], check=True, timeout=120)
    else:
        _copy(str(sa.engine.make_url(url).database), str(to))


def _restore(url: str, backup: Path) -> None:
    reset_engine()
    if url.startswith("postgresql"):
        subprocess.run(
            ["pg_restore", "--clean", "--if-exists", "--no-owner", "-d", _plain(url), str(backup)],
            check=True,
            timeout=60,
        )
    else:
        _copy(str(backup), str(sa.engine.make_url(url).database))


def _reapply(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`mailing erasures reapply` on the production defaults: the journal at its default path
    (var/erasure-journal.jsonl in the working directory)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env = {
        **keep,
        "MAILING_ENV": "production",
        "MAILING_DATABASE_URL": url,
        "MAILING_SECRET_KEYS": os.environ["MAILING_SECRET_KEYS"],
    }
    return subprocess.run(
        [MAILING, "erasures", "reapply"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_erasure_survives_restoring_last_nights_backup(
    client, smtp, session, settings_env, tmp_path
):
    settings_env(erasure_journal=str(tmp_path / "var" / "erasure-journal.jsonl"))
    url = os.environ["MAILING_DATABASE_URL"]
    erased, kept = add_subscribers(2, ["healthy-living"], prefix="restore-")
    _backup(url, tmp_path / "last-night.dump")

    subscriber = by_key(session, erased)
    assert subscriber is not None
    page = links.url_for(Purpose.ERASE, subscriber).removeprefix("http://testserver")
    assert client.post(page).status_code == 200
    assert count("subscriber", f"WHERE email_key = '{erased}'") == 0
    journal = (tmp_path / "var" / "erasure-journal.jsonl").read_text()
    assert "restore-" not in journal and address_hash(erased) in journal  # a hash, no address

    session.close()  # a restore drops the tables: no open transaction may hold them
    _restore(url, tmp_path / "last-night.dump")
    assert count("subscriber", f"WHERE email_key = '{erased}'") == 1  # the backup brought it back

    done = _reapply(url, tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["erased_again"] == 1 and figures["journal_entries"] == 1
    assert count("subscriber", f"WHERE email_key = '{erased}'") == 0
    assert count("subscriber", f"WHERE email_key = '{kept}'") == 1
    assert count("delivery") == 0 and count("erasure_log", "WHERE reason = 'reapplied'") == 1
    with session_scope() as fresh:
        assert is_suppressed(fresh, erased) and not is_suppressed(fresh, kept)

    again = _reapply(url, tmp_path)  # idempotent
    assert json.loads(again.stdout.strip().splitlines()[-1])["erased_again"] == 0
    assert count("erasure_log", "WHERE reason = 'reapplied'") == 1


def test_someone_who_signed_up_again_after_their_erasure_is_left_alone(
    database, settings_env, tmp_path
):
    settings_env(erasure_journal=str(tmp_path / "journal.jsonl"))
    (back,) = add_subscribers(1, ["healthy-minds"], prefix="back-")
    journal.record(address_hash(back), keep_hash=True, at=utcnow() - timedelta(days=1))
    with session_scope() as session:
        result = reapply(session)
    assert (result.erased_again, result.suppressions_restored) == (0, 0)
    assert count("subscriber", f"WHERE email_key = '{back}'") == 1


def test_reapply_before_migrate_says_so_in_one_line(database, tmp_path):
    if PG_SERVER:
        name = f"mailing_empty_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(PG_SERVER).set(database=name).render_as_string(False)
    else:
        url = f"sqlite:///{tmp_path}/empty.db"
    try:
        done = _reapply(url, tmp_path)
    finally:
        if PG_SERVER:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    assert done.returncode == 1
    assert done.stdout.strip().splitlines() == [
        "mailing: the database schema is not up to date: run `mailing migrate` first"
    ]
