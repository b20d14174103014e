"""Fixtures on real parts: a fresh database (PostgreSQL or SQLite), a real SMTP server
(aiosmtpd on loopback), a real Celery worker, and Redis when the run names one.

Which parts: MAILING_TEST_DATABASE_URL (a PostgreSQL server URL; unset means a SQLite file),
MAILING_TEST_BROKER_URL (unset means Celery's in-process memory transport) and
MAILING_TEST_REDIS_URL (unset means in-process rate limits). `.ci/run` runs the suite both ways.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

TEST_SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
PG_SERVER = os.environ.get("MAILING_TEST_DATABASE_URL", "")
BROKER = os.environ.get("MAILING_TEST_BROKER_URL", "")
REDIS = os.environ.get("MAILING_TEST_REDIS_URL", "")

_tmp = tempfile.mkdtemp(prefix="mailing-test-")
if PG_SERVER:
    _db_name = f"mailing_test_{uuid.uuid4().hex[:10]}"
    DATABASE_URL = (
        sa.engine.make_url(PG_SERVER).set(database=_db_name).render_as_string(hide_password=False)
    )
else:
    DATABASE_URL = f"sqlite:///{_tmp}/mailing.db"

# Set before anything reads the settings.
BASE_ENV = {
    "MAILING_ENV": "dev",
    "MAILING_DATABASE_URL": DATABASE_URL,
    "MAILING_SECRET_KEYS": TEST_SECRET,
    "MAILING_BASE_URL": "http://testserver",
    "MAILING_RATE_LIMIT_PER_IP": "100000",
    "MAILING_FROM_ADDRESS": "Health Inequalities Strategy <updates@example.org>",
    "MAILING_ERASURE_JOURNAL": f"{_tmp}/erasure-journal.jsonl",
}
for _k in [k for k in os.environ if k.startswith("MAILING_") and not k.startswith("MAILING_TEST_")]:
    del os.environ[_k]
os.environ.update(BASE_ENV)
if BROKER:
    os.environ["MAILING_BROKER_URL"] = BROKER
if REDIS:
    os.environ["MAILING_REDIS_URL"] = REDIS

from mailing.config import get_settings  # noqa: E402
from mailing.db import get_engine, reset_engine  # noqa: E402
from mailing.mail import devcapture  # noqa: E402


def reload_settings() -> None:
    """Forget everything built from the settings, so the next use reads the environment again."""
    from mailing import ratelimit, rendering
    from mailing.subscribers import consent

    consent.forget_stored_texts()
    get_settings.cache_clear()
    ratelimit.get_limiter.cache_clear()
    rendering.environment.cache_clear()


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A new, migrated database for this run, dropped at the end."""
    from mailing import migrate

    admin = None
    if PG_SERVER:
        admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{_db_name}"'))
    migrate.upgrade(DATABASE_URL)
    yield DATABASE_URL
    reset_engine()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{_db_name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def smtp() -> Iterator[devcapture.Capture]:
    """A real SMTP server on loopback; every email the service sends lands in smtp.outbox."""
    capture = devcapture.Capture().start()
    os.environ["MAILING_SMTP_HOST"] = "127.0.0.1"
    os.environ["MAILING_SMTP_PORT"] = str(capture.port)
    reload_settings()
    yield capture
    capture.stop()


@pytest.fixture(scope="session")
def worker(database: str, smtp: devcapture.Capture) -> Iterator[Any]:
    """A real Celery worker (in a thread) on the run's broker: Redis, or the memory transport."""
    from workers.celery_app import configure
    from workers.embedded import start_embedded_worker

    app = configure(embedded=True)
    if BROKER.startswith("redis"):
        import redis

        redis.Redis.from_url(BROKER).flushdb()
    w = start_embedded_worker(app)
    yield w
    w.stop()


_barriers: dict[str, threading.Event] = {}


def _register_barrier_task() -> Any:
    from workers.celery_app import app

    @app.task(name="tests.barrier", ignore_result=True)
    def barrier(key: str) -> None:
        _barriers[key].set()

    return barrier


_barrier_task = _register_barrier_task()


def drain_worker(timeout: float = 30.0) -> None:
    """Wait until the worker has run everything queued so far, on every queue (FIFO per queue)."""
    from workers.celery_app import QUEUES
    from workers.enqueue import notice_publisher

    # Notices the web handed to its publisher go to the broker first, then the barriers.
    if not notice_publisher.wait(timeout):
        raise RuntimeError("the web's notice publisher did not publish in time")
    events = []
    for queue in QUEUES:
        key = uuid.uuid4().hex
        _barriers[key] = threading.Event()
        _barrier_task.apply_async(args=(key,), queue=queue)
        events.append(_barriers[key])
    for event in events:
        if not event.wait(timeout):
            raise RuntimeError("the worker did not drain its queues in time")


def _truncate() -> None:
    from sqlmodel import SQLModel

    from mailing.models import FIXED_TABLES

    engine = get_engine()
    # The migrations' own rows (theme_bit) stay: nothing but a migration writes them.
    tables = [t.name for t in SQLModel.metadata.sorted_tables if t.name not in FIXED_TABLES]
    if engine.dialect.name == "postgresql":
        import psycopg

        truncate = sa.text(
            "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        )
        # TRUNCATE locks its tables one by one: a transaction the last test left running (a
        # request's background work finishing) that holds one of them and wants another is a
        # deadlock PostgreSQL detects and settles by rolling the TRUNCATE back whole, so it is
        # simply run again once the other has committed.
        for attempt in range(5):
            try:
                with engine.begin() as conn:
                    conn.execute(truncate)
                return
            except sa.exc.OperationalError as error:
                deadlock = isinstance(error.orig, psycopg.errors.DeadlockDetected)
                if not deadlock or attempt == 4:
                    raise
    with engine.begin() as conn:
        # The kept counts last: deleting the rows they count moves them (triggers).
        for t in sorted(reversed(tables), key=lambda name: name.endswith("_count")):
            conn.execute(sa.text(f'DELETE FROM "{t}"'))


@pytest.fixture(autouse=True)
def clean_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with empty tables, no rate-limit counts and an empty outbox."""
    if "database" in request.fixturenames or "client" in request.fixturenames:
        request.getfixturevalue("database")
        _truncate()
    reload_settings()
    if REDIS:
        import redis

        r = redis.Redis.from_url(REDIS)
        for key in r.scan_iter(match="mailing:*"):
            r.delete(key)
    if "smtp" in request.fixturenames:
        request.getfixturevalue("smtp").outbox.clear()
    yield
    if "worker" in request.fixturenames or "client" in request.fixturenames:
        # Mail a test enqueued must not land in the next test's outbox.
        drain_worker()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Change settings for one test: settings_env(rate_limit_per_ip=2)."""

    def apply(**values: object) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"MAILING_{key.upper()}", str(value))
        reload_settings()

    yield apply
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def client(database: str, smtp: devcapture.Capture, worker: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from mailing.web.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def session(database: str) -> Iterator[Any]:
    from sqlmodel import Session

    with Session(get_engine(), expire_on_commit=False) as s:
        yield s


@pytest.fixture
def prod(client: Any, settings_env: Callable[..., None]) -> Iterator[Any]:
    """The app at its production defaults (MAILING_ENV=production, the test settings above
    otherwise), over HTTPS so the console's Secure cookie is sent back."""
    from fastapi.testclient import TestClient

    from mailing.web.app import create_app

    settings_env(env="production")
    with TestClient(
        create_app(), base_url="https://testserver", raise_server_exceptions=False
    ) as c:
        yield c
