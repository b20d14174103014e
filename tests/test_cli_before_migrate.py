"""A command that needs the schema, run before `mailing migrate`, says so in one line and exits
non-zero: no traceback, and no empty SQLite file made in whatever folder it ran from. Real
subprocesses of the installed `mailing` command, in a fresh temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MAILING = str(Path(sys.executable).parent / "mailing")
NOT_MIGRATED = "mailing: the database is not migrated: run `mailing migrate` first\n"
NEEDS_SCHEMA = [
    ["staff", "create", "editor@example.org", "--role", "editor"],
    ["staff", "token", "editor@example.org"],
    ["staff", "reset-2fa", "editor@example.org"],
    ["send", "1"],
    ["purge"],
    ["import", "list.csv", "--source", "an old list"],
]


def _run(folder: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    return subprocess.run(
        [MAILING, *args],
        cwd=folder,
        env={**env, **settings},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", NEEDS_SCHEMA, ids=lambda c: "-".join(c[:2]))
def test_a_command_before_migrate_says_so_in_one_line(tmp_path, command):
    (tmp_path / "list.csv").write_text("email\nsomeone@example.org\n")
    result = _run(tmp_path, *command)
    assert result.returncode != 0
    assert result.stderr == NOT_MIGRATED
    assert not (tmp_path / "var").exists()  # no empty var/mailing.db left behind


def test_on_production_defaults_an_empty_database_is_not_migrated_either(tmp_path):
    """MAILING_ENV=production, a database file that exists but was never migrated."""
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    settings = {
        "MAILING_ENV": "production",
        "MAILING_SECRET_KEYS": "k" * 40,
        "MAILING_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db",
    }
    result = _run(tmp_path, "staff", "create", "a@example.org", "--role", "admin", **settings)
    assert (result.returncode, result.stderr) == (1, NOT_MIGRATED)


def test_the_readme_order_works_from_a_fresh_folder(tmp_path):
    migrated = _run(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    created = _run(tmp_path, "staff", "create", "editor@example.org", "--role", "editor")
    assert created.returncode == 0, created.stderr
    assert "created staff member 1 (editor)" in created.stdout
    assert "Traceback" not in created.stderr
