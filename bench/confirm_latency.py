"""Confirmation latency during a large send: sign-up answered -> confirmation at the SMTP sink.

    .venv/bin/python bench/confirm_latency.py --n 100000 --probes 60 [--latency 20]

Creates a throwaway PostgreSQL database with N active subscribers, starts the DEFAULT worker
command (`mailing worker`: every queue, the default pool and concurrency) and a minimal SMTP
sink (bench/relay.py, answering each line --latency ms late: a relay across a network), starts
a send to all N, and while it runs signs up one new address every --interval
seconds through `POST /subscriptions` of a real `mailing serve`. For each it measures the time
from the 202 answer to the confirmation arriving at the sink; prints p50, p99 and max, and the
same latency measured with no send running (the baseline of the same run).
Not a test: it asserts only that every confirmation arrived.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from relay import start_relay  # noqa: E402
from send import add_subscribers, clear_broker  # noqa: E402
from throwaway import drop_database, free_port, make_database, stop_groups  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    mailing = Path(sys.executable).with_name("mailing")
    return subprocess.Popen(
        [str(mailing), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def probe(base: str, n: int, arrivals: Any, pending: dict[str, float], tag: str) -> None:
    import httpx

    address = f"probe-{tag}-{n}@example.org"
    answer = httpx.post(
        f"{base}/subscriptions", json={"email": address, "consent": True}, timeout=30
    )
    assert answer.status_code == 202, answer.text
    pending[f"<{address}>"] = time.time()


def collect(arrivals: Any, pending: dict[str, float], timeout: float) -> list[float]:
    got: list[float] = []
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        try:
            rcpt, at = arrivals.get(timeout=0.5)
        except queue.Empty:
            continue
        if rcpt in pending:
            got.append(at - pending.pop(rcpt))
    if pending:
        raise RuntimeError(f"{len(pending)} confirmations never arrived")
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="recipients of the send")
    parser.add_argument("--probes", type=int, default=60, help="sign-ups during the send")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between sign-ups")
    parser.add_argument("--latency", type=float, default=0.0, help="ms the relay answers late")
    parser.add_argument(
        "--database-server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/4")
    args = parser.parse_args()

    db_url, db_name = make_database(args.database_server)
    port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_DATABASE_URL=db_url,
        MAILING_BROKER_URL=args.broker,
        MAILING_REDIS_URL=args.redis,
        MAILING_SMTP_HOST="127.0.0.1",
        MAILING_SMTP_PORT=str(port),
        MAILING_SECRET_KEYS="bench-secret-key-0123456789-abcdefghijklmnop",
        MAILING_BASE_URL="https://updates.example.org",
        MAILING_ENV="production",
        MAILING_RATE_LIMIT_PER_IP="100000",
    )
    os.environ.update(env)
    from mailing import migrate

    migrate.upgrade(db_url)
    clear_broker(args.broker)

    arrivals: Any = mp.Queue()
    sink, _, _ = start_relay(port, args.latency, arrivals)
    procs: list[subprocess.Popen[bytes]] = []
    base = f"http://127.0.0.1:{http_port}"
    try:
        add_subscribers(args.n)
        procs.append(spawn(["worker"], env))  # the default command: every queue
        procs.append(spawn(["serve", "--port", str(http_port)], env))
        import httpx

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)

        pending: dict[str, float] = {}
        for i in range(10):  # baseline: no send running
            probe(base, i, arrivals, pending, "idle")
            time.sleep(args.interval)
        idle = collect(arrivals, pending, 120)

        from mailing import sending, updates
        from mailing.db import session_scope
        from workers.celery_app import configure
        from workers.enqueue import publish_update_batches

        configure()
        with session_scope() as session:
            update = updates.create_draft(
                session,
                None,
                "Benchmark",
                "Some **text**. " * 50,
                ["healthy-minds", "healthy-places"],
            )
            assert update.id is not None
            update_id = update.id
        with session_scope() as session:
            sending.request_send(session, update_id, None, publish_update_batches)
        t0 = time.time()
        probes = 0
        while probes < args.probes:
            with session_scope() as session:
                if sending.progress(session, update_id).finished:
                    break
            probe(base, probes, arrivals, pending, "busy")
            probes += 1
            time.sleep(args.interval)
        busy = collect(arrivals, pending, 300)
        while True:
            with session_scope() as session:
                live = sending.progress(session, update_id)
            if live.finished:
                break
            time.sleep(0.5)
        took = time.time() - t0
        rate = live.sent / took
        print(
            f"send: {live.sent} emails in {took:.1f}s ({rate:,.0f}/s) on defaults, "
            f"relay {args.latency:g} ms a line"
        )
        for name, values in (
            ("no send (baseline)", idle),
            (f"during the send ({len(busy)})", busy),
        ):
            print(
                f"confirmation latency, {name}: p50 {percentile(values, 50):.2f}s, "
                f"p99 {percentile(values, 99):.2f}s, max {max(values):.2f}s"
            )
    finally:
        stop_groups(procs)
        sink.terminate()
        from mailing.db import reset_engine

        reset_engine()
        drop_database(args.database_server, db_name)
        clear_broker(args.broker)


if __name__ == "__main__":
    main()
