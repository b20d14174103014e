"""With MAILING_ENV=production every command refuses to start without proper secret keys."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMANDS = [["migrate"], ["serve"], ["worker"], ["beat"], ["dev"]]


def _run(args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mailing.cli", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_refuses_without_secret_keys(command, tmp_path):
    result = _run(
        command, MAILING_ENV="production", MAILING_DATABASE_URL=f"sqlite:///{tmp_path}/x.db"
    )
    assert result.returncode == 2
    assert "MAILING_SECRET_KEYS" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_refuses_a_short_key(tmp_path):
    result = _run(
        ["migrate"],
        MAILING_ENV="production",
        MAILING_SECRET_KEYS="short",
        MAILING_DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
    )
    assert result.returncode == 2
    assert "shorter than 32" in result.stderr


def test_refuses_a_short_key_anywhere_in_the_rotation_list(tmp_path):
    result = _run(
        ["migrate"],
        MAILING_ENV="production",
        MAILING_SECRET_KEYS="k" * 40 + ",old",
        MAILING_DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
    )
    assert result.returncode == 2
    assert "key 2" in result.stderr


def test_dev_is_refused_in_production_even_with_keys(tmp_path):
    result = _run(
        ["dev"],
        MAILING_ENV="production",
        MAILING_SECRET_KEYS="k" * 40,
        MAILING_DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
    )
    assert result.returncode == 2
    assert "development only" in result.stderr


def test_starts_with_long_keys(tmp_path):
    result = _run(
        ["migrate"],
        MAILING_ENV="production",
        MAILING_SECRET_KEYS="k" * 40,
        MAILING_DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.db").exists()
