"""Faults in the parts we depend on: the database restarted, the broker unreachable.

The database test runs its own private PostgreSQL cluster (initdb + pg_ctl on a free port), so
stopping it disturbs nothing else, and drives a real `mailing serve` subprocess.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
BROKER = os.environ.get("MAILING_TEST_BROKER_URL", "")
# The served app publishes to its own Redis database, so the suite's in-process worker never
# picks up tasks that name rows of the private cluster.
FAULT_BROKER = BROKER.rsplit("/", 1)[0] + "/13" if BROKER.startswith("redis") else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


class PrivatePostgres:
    def __init__(self) -> None:
        self.bin = PG_BIN[-1]
        self.dir = tempfile.mkdtemp(prefix="mailing-pg-")
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres"
            ),
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(
            _as_postgres(
                f"{self.bin}/pg_ctl",
                "-D",
                f"{self.dir}/data",
                "-l",
                f"{self.dir}/log",
                "-w",
                "-o",
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                "start",
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", "fast", "-w", "stop"
            ),
            check=True,
            capture_output=True,
        )

    def remove(self) -> None:
        subprocess.run(
            _as_postgres(f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def _serve(env_extra: dict[str, str], cwd: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update({"MAILING_SECRET_KEYS": "fault-test-key-" + "k" * 32, **env_extra})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailing.cli", "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    _wait(lambda: _status(base + "/healthz") == 200, proc, "mailing serve did not start")
    return proc, base


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.TransportError:
        return None


def _wait(condition, proc: subprocess.Popen | None, message: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{message}: exited\n{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(message)
        time.sleep(0.1)  # polling a condition with a deadline


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    _need(
        bool(PG_BIN) and shutil.which("runuser") is not None,
        "PostgreSQL server binaries are not installed",
    )
    if not BROKER.startswith("redis"):
        pytest.skip("runs in the PostgreSQL + Redis pass (needs a broker outside this process)")
    pg = PrivatePostgres()
    pg.start()
    from mailing import migrate

    migrate.upgrade(pg.url)
    yield pg
    pg.remove()


def test_database_restart_gives_503_then_recovers_and_loses_no_accepted_signup(
    private_postgres, tmp_path
):
    pg = private_postgres
    proc, base = _serve(
        {"MAILING_DATABASE_URL": pg.url, "MAILING_BROKER_URL": FAULT_BROKER}, str(tmp_path)
    )
    accepted: list[str] = []
    try:

        def signup(n: int) -> httpx.Response:
            r = httpx.post(
                base + "/subscriptions",
                json={"email": f"fault{n}@example.org", "consent": True},
                timeout=30,
            )
            if r.status_code == 202:
                accepted.append(f"fault{n}@example.org")
            return r

        assert signup(0).status_code == 202
        assert httpx.get(base + "/readyz").status_code == 200

        pg.stop()
        ready = httpx.get(base + "/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["database"] is False
        outage = [signup(n) for n in range(1, 4)]
        assert [r.status_code for r in outage] == [503] * 3
        assert all(r.headers.get("retry-after") for r in outage)
        page = httpx.post(
            base + "/subscriptions",
            data={"email": "form@example.org", "consent": "yes"},
            headers={"accept": "text/html"},
            timeout=30,
        )
        assert page.status_code == 503 and "try again" in page.text

        pg.start()
        _wait(lambda: _status(base + "/readyz") == 200, proc, "/readyz did not recover")
        assert signup(10).status_code == 202
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        import redis

        redis.Redis.from_url(FAULT_BROKER).flushdb()

    engine = sa.create_engine(pg.url)
    with engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT email_key FROM subscriber")).scalars())
    engine.dispose()
    assert set(accepted) <= stored
    assert accepted == ["fault0@example.org", "fault10@example.org"]


def test_readyz_is_503_when_the_broker_is_unreachable(tmp_path):
    dead_broker = f"redis://127.0.0.1:{_free_port()}/0"
    from mailing import migrate

    db = f"sqlite:///{tmp_path}/ready.db"
    migrate.upgrade(db)
    proc, base = _serve(
        {"MAILING_DATABASE_URL": db, "MAILING_BROKER_URL": dead_broker}, str(tmp_path)
    )
    try:
        ready = httpx.get(base + "/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "database": True, "broker": False}
        assert httpx.get(base + "/healthz").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert Path(tmp_path / "ready.db").exists()
