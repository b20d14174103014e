"""compose.yaml parses, and every service that runs our image runs a `mailing` command that exists.

There is no Docker engine here, so parsing and checking the commands is what CI can do.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mailing.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_parses_and_names_every_part():
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "beat", "mailpit"} <= set(services)


def test_every_mailing_command_exists():
    commands = set(main.commands)
    checked = 0
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if command and command[0] == "mailing":
            assert command[1] in commands, f"{name}: mailing {command[1]} does not exist"
            checked += 1
    assert checked >= 4  # migrate, api, worker, beat


def test_app_services_wait_for_migrations_and_take_secrets_from_the_environment():
    services = _compose()["services"]
    for name in ("api", "worker", "beat"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        env = services[name]["environment"]
        assert env["MAILING_ENV"] == "production"
        assert env["MAILING_SECRET_KEYS"].startswith("${MAILING_SECRET_KEYS:?"), name
    for name in ("postgres", "redis", "api"):
        assert "healthcheck" in services[name], name


def test_worker_scales_without_fixed_names_or_ports():
    worker = _compose()["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_dockerfile_runs_commands_that_exist():
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["mailing", "serve"' in text
    assert "serve" in main.commands


def test_inbound_is_opt_in_and_says_what_it_needs():
    """The inbound service binds port 25 and needs MAILING_BOUNCE_DOMAIN: a plain `up` leaves it
    out, and with its profile a missing domain stops compose with a message, not a restart loop."""
    services = _compose()["services"]
    inbound = services["inbound"]
    assert inbound["profiles"] == ["inbound"]
    assert inbound["environment"]["MAILING_BOUNCE_DOMAIN"].startswith("${MAILING_BOUNCE_DOMAIN:?")
    assert all("profiles" not in s for n, s in services.items() if n != "inbound")


def _normal(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _locked(lock: str) -> set[str]:
    names = set()
    for line in (ROOT / lock).read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            names.add(_normal(line.split("==")[0].split("[")[0]))
    return names


def test_every_dependency_is_locked_with_hashes_and_installed_from_the_lock():
    """A dependency added to pyproject.toml without `bash scripts/lock` fails here, not in a
    build that silently resolves something else."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(specs: list[str]) -> set[str]:
        return {_normal(re.split(r"[<>=\[ ;]", s, maxsplit=1)[0]) for s in specs}

    runtime = names(project["dependencies"])
    assert runtime <= _locked("requirements.lock"), runtime - _locked("requirements.lock")
    everything = runtime | names(project["optional-dependencies"]["test"]) | {"hatchling"}
    assert everything <= _locked("requirements-test.lock")
    for lock in ("requirements.lock", "requirements-test.lock"):
        text = (ROOT / lock).read_text()
        assert "--hash=sha256:" in text
        pins = [ln for ln in text.splitlines() if "==" in ln and not ln.startswith(" ")]
        assert all(ln.rstrip().endswith("\\") for ln in pins), "every pin carries hashes"
    assert "--require-hashes" in (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in (ROOT / "scripts" / "_venv.sh").read_text()
