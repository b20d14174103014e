"""Benchmark of `mailing inbound`: hard bounces processed a second, end to end.

    .venv/bin/python bench/inbound.py --n 2000 --connections 4

Creates a throwaway PostgreSQL database (or `--sqlite`), N active subscribers and an update whose
N copies the relay took, starts `mailing inbound` (MAILING_ENV=production) on a free loopback
port, then delivers one RFC 3464 bounce (5.1.1, as postfix writes it) to each copy's return path
over C concurrent SMTP connections. `mailing inbound` answers 250 only after the bounce is
classified and committed, so the time from the first MAIL to the last 250 is the processing
time. Prints bounces a second and checks that all N subscribers ended `bounced`. Not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from throwaway import drop_database, free_port, make_database  # noqa: E402

DOMAIN = "bounce.bench"
SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def prepare(url: str, n: int) -> list[tuple[int, int, str]]:
    """Migrate, insert N subscribers and one sent update; returns (delivery, subscriber, email)."""
    from mailing import migrate
    from mailing.models import utcnow

    migrate.upgrade(url)
    engine = sa.create_engine(url)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subscriber (email, email_key, status, token_version, created_at, "
                "updated_at, confirmed_at) VALUES (:e, :e, 'active', 1, :now, :now, :now)"
            ),
            [{"e": f"bench{i}@example.net", "now": now} for i in range(n)],
        )
        update_id = conn.execute(
            sa.text(
                "INSERT INTO theme_update (subject, body, themes, status, created_at, updated_at, "
                "recipients, sent, failed) VALUES ('Bench', 'Body', 'healthy-minds', 'sent', "
                ":now, :now, :n, :n, 0) RETURNING id"
            ),
            {"now": now, "n": n},
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO delivery (update_id, subscriber_id, status, attempts, sent_at) "
                "SELECT :u, id, 'sent', 1, :now FROM subscriber"
            ),
            {"u": update_id, "now": now},
        )
        rows = conn.execute(
            sa.text(
                "SELECT d.id, s.id, s.email FROM delivery d JOIN subscriber s "
                "ON s.id = d.subscriber_id ORDER BY d.id"
            )
        ).all()
    engine.dispose()
    return [(int(d), int(s), str(e)) for d, s, e in rows]


def bounces(copies: list[tuple[int, int, str]]) -> list[tuple[str, bytes]]:
    from mailing.deliverability import returnpath
    from tests.support.mta import messages

    out = []
    for delivery_id, subscriber_id, email in copies:
        ref = returnpath.Ref(returnpath.RefKind.DELIVERY, subscriber_id, delivery_id)
        to = f"bounce+{returnpath.encode(ref)}@{DOMAIN}"
        out.append((to, messages.dsn(to, email, "5.1.1")))
    return out


def deliver(port: int, work: list[tuple[str, bytes]], errors: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for to, raw in work:
            try:
                smtp.sendmail("", [to], raw)
            except smtplib.SMTPException as exc:
                errors.append(str(exc))


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("mailing inbound exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("mailing inbound did not start")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = None
    if args.sqlite:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='mailing-bench-')}/bench.db"
    else:
        url, name = make_database(args.server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_ENV="production",
        MAILING_DATABASE_URL=url,
        MAILING_SECRET_KEYS=SECRET,
        MAILING_BOUNCE_DOMAIN=DOMAIN,
    )
    os.environ.update(env)
    process = None
    try:
        copies = prepare(url, args.n)
        work = bounces(copies)
        port = free_port()
        mailing = Path(sys.executable).parent / "mailing"
        process = subprocess.Popen([str(mailing), "inbound", "--port", str(port)], env=env)
        wait_listening(port, process)
        errors: list[str] = []
        shares = [work[i :: args.connections] for i in range(args.connections)]
        threads = [threading.Thread(target=deliver, args=(port, s, errors)) for s in shares]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        elapsed = time.perf_counter() - started
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            bounced = conn.execute(
                sa.text("SELECT COUNT(*) FROM subscriber WHERE status = 'bounced'")
            ).scalar_one()
        engine.dispose()
        where = "SQLite" if args.sqlite else "PostgreSQL"
        print(
            f"{args.n} bounces over {args.connections} connections ({where}): "
            f"{elapsed:.2f} s, {args.n / elapsed:.0f} bounces/s; "
            f"{bounced} subscribers bounced, {len(errors)} errors"
        )
        return 0 if bounced == args.n and not errors else 1
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        if name is not None:
            drop_database(args.server, name)


if __name__ == "__main__":
    sys.exit(main())
