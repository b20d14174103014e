"""Benchmark of the update pipeline end to end, against clients of the same sink in the same run.

    .venv/bin/python bench/send.py --latency 20 --n 5000 [--connections 32]
    .venv/bin/python bench/send.py --n 100000 [--workers 2]

Creates a throwaway PostgreSQL database with N active subscribers, runs the service on the
production defaults (plain `mailing worker`, MAILING_ENV=production; `--workers K`: K solo
`-Q updates` workers instead) against bench/relay.py in its own process, an SMTP sink that
offers PIPELINING and answers each line `--latency` ms after it arrived (a relay that far
away). It times the send from `request_send` (what POST /admin/updates/{id}/send does) to the
last message accepted by the sink, then sends the same number of pre-built messages of the
same size to the same sink from a C-connection pipelined client (one round trip a message on
each connection), and at loopback also over K connections with smtplib's `sendmail` (the raw
ceiling: four round trips a message) and pipelined. It prints the rates, the ratios, the
workers' peak RSS (VmHWM) and the CPU each part used.
Not a test: it asserts nothing but that every message arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from relay import run_relay  # noqa: E402
from throwaway import (  # noqa: E402
    cpu_seconds,
    drop_database,
    free_port,
    make_database,
    processes_cpu,
    stop_groups,
    tree_cpu,
)

from mailing.mail.relay import _stuffed  # noqa: E402

# --- The SMTP sink: bench/relay.py (answers each line `--latency` ms late; 0 on loopback)

run_sink = run_relay  # (port, count, last, ready, arrivals=None, latency_ms=0.0)


# --- Setup ----------------------------------------------------------------------------------


def add_subscribers(n: int) -> None:
    import sqlalchemy as sa

    from mailing.db import get_engine

    now = datetime.now(UTC)
    step = 10_000
    with get_engine().begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            for start in range(0, n, step):
                with cur.copy(
                    "COPY subscriber (email, email_key, status, token_version, created_at, "
                    "updated_at, confirmed_at) FROM STDIN"
                ) as copy:
                    for i in range(start, min(n, start + step)):
                        e = f"reader{i}@example.net"
                        copy.write_row((e, e, "active", 1, now, now, now))
        conn.execute(
            sa.text(
                "INSERT INTO subscriber_theme (subscriber_id, theme) "
                "SELECT id, CASE WHEN id % 2 = 0 THEN 'healthy-minds' ELSE 'healthy-places' END "
                "FROM subscriber"
            )
        )
        conn.execute(sa.text("ANALYZE"))


def clear_broker(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    for key in r.scan_iter():
        if not key.startswith(b"mailing:"):
            r.delete(key)


def start_workers(k: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    mailing = Path(sys.executable).with_name("mailing")
    procs = []
    for i in range(k):
        procs.append(
            subprocess.Popen(
                [
                    *(str(mailing), "worker", "-Q", "updates", "--pool", "solo"),
                    *("-n", f"bench{i}@%h", "--without-gossip", "--without-mingle"),
                    *("--without-heartbeat", "-l", "INFO"),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        )
    for p in procs:
        assert p.stderr is not None
        deadline = time.time() + 60
        for line in p.stderr:
            if b"ready." in line:
                break
            if time.time() > deadline:
                raise RuntimeError("a worker did not start")
        # keep draining stderr so a full pipe never blocks the worker
        import threading

        threading.Thread(target=lambda s=p.stderr: [None for _ in s], daemon=True).start()
    return procs


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def blast(port: int, messages: list[bytes], envelope_from: str, rcpts: list[str]) -> None:
    smtp = smtplib.SMTP("127.0.0.1", port)
    for rcpt, raw in zip(rcpts, messages, strict=True):
        smtp.sendmail(envelope_from, [rcpt], raw)
    smtp.quit()


def blast_pipelined(port: int, messages: list[bytes], envelope_from: str, rcpts: list[str]) -> None:
    """The stricter ceiling: pre-built, pre-stuffed messages written as `Mailer.send_many`
    writes them to a relay offering PIPELINING (one message's content and the next one's
    envelope in one write, their four answers read together: one round trip a message), with
    nothing else to do. What is left between this and the service is the service's own work."""
    sock = socket.create_connection(("127.0.0.1", port))
    answers = sock.makefile("rb")

    def read(n: int) -> None:
        for _ in range(n):
            while (line := answers.readline())[3:4] == b"-":
                pass
            if line[:1] not in (b"2", b"3"):
                raise RuntimeError(f"the sink answered {line!r}")

    read(1)
    sock.sendall(b"EHLO bench\r\n")
    read(1)
    sender = b"MAIL FROM:<" + envelope_from.encode() + b">\r\nRCPT TO:<"
    content = b""
    for rcpt, stuffed in zip(rcpts, messages, strict=True):
        sock.sendall(content + sender + rcpt.encode() + b">\r\nDATA\r\n")
        read(4 if content else 3)
        content = stuffed
    sock.sendall(content + b"QUIT\r\n")
    read(2)
    sock.close()


def ceiling(
    target: Any,
    port: int,
    k: int,
    messages: list[bytes],
    sender: str,
    rcpts: list[str],
    count: Any,
    last: Any,
) -> float:
    """Seconds for `target` to hand every message to the sink over k connections at once."""
    before = count.value
    procs = [
        mp.Process(target=target, args=(port, messages[i::k], sender, rcpts[i::k]))
        for i in range(k)
    ]
    started = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert count.value - before == len(messages)
    return last.value - started


async def _pipelined_connection(
    port: int, messages: list[bytes], sender: bytes, rcpts: list[str]
) -> None:
    """One connection of the C-connection client: as `blast_pipelined`, on asyncio."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def read(n: int) -> None:
        for _ in range(n):
            while (line := await reader.readline())[3:4] == b"-":
                pass
            if line[:1] not in (b"2", b"3"):
                raise RuntimeError(f"the sink answered {line!r}")

    await read(1)
    writer.write(b"EHLO bench\r\n")
    await read(1)
    content = b""
    for rcpt, stuffed in zip(rcpts, messages, strict=True):
        writer.write(content + sender + rcpt.encode() + b">\r\nDATA\r\n")
        await read(4 if content else 3)
        content = stuffed
    writer.write(content + b"QUIT\r\n")
    await read(2)
    writer.close()


def blast_pool(port: int, slices: list[tuple[list[bytes], list[str]]], envelope_from: str) -> None:
    """Several pipelined connections at once in one process (asyncio)."""
    sender = b"MAIL FROM:<" + envelope_from.encode() + b">\r\nRCPT TO:<"

    async def all_of_them() -> None:
        await asyncio.gather(
            *(_pipelined_connection(port, msgs, sender, rcpts) for msgs, rcpts in slices)
        )

    asyncio.run(all_of_them())


def pool_ceiling(
    port: int,
    connections: int,
    messages: list[bytes],
    sender: str,
    rcpts: list[str],
    count: Any,
    last: Any,
) -> float:
    """Seconds for a C-connection pipelined client (pre-stuffed messages, one round trip a
    message on each connection; its connections spread over one process a core) to hand
    every message to the sink."""
    before = count.value
    slices = [(messages[i::connections], rcpts[i::connections]) for i in range(connections)]
    processes = min(os.cpu_count() or 1, connections)
    procs = [
        mp.Process(target=blast_pool, args=(port, slices[i::processes], sender))
        for i in range(processes)
    ]
    started = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert count.value - before == len(messages), (count.value - before, len(messages))
    return last.value - started


def start_default_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`mailing worker` as an operator runs it (every queue, the default pool and concurrency,
    its process reserved for `transactional`); returns once both of its nodes log "ready."
    (read from its log, not by a broadcast ping: kombu's after-fork clean-up would then hang
    the ceilings' forked clients). BENCH_WORKER_LOG=FILE keeps the log."""
    import threading

    mailing = Path(sys.executable).with_name("mailing")
    proc = subprocess.Popen(
        [str(mailing), "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    keep = open(os.environ.get("BENCH_WORKER_LOG", os.devnull), "ab")  # noqa: SIM115
    ready, deadline = 0, time.time() + 90
    for line in proc.stderr:
        keep.write(line)
        ready += b" ready." in line
        if ready >= 2:
            break
        if time.time() > deadline:
            raise RuntimeError("`mailing worker` did not start")
    if ready < 2:
        raise RuntimeError("`mailing worker` exited")
    # keep draining its log so a full pipe never blocks it
    threading.Thread(target=lambda: [keep.write(x) for x in proc.stderr], daemon=True).start()
    return proc


def tree_pids(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(proc.name))
        except OSError:
            continue
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def timeline(samples: list[tuple[float, int]], total: int) -> str:
    """When the first email and each tenth of the send had arrived (sampled every 50 ms)."""
    marks = [1] + [total * k // 10 for k in range(1, 11)]
    out = []
    for mark in marks:
        at = next((t for t, n in samples if n >= mark), samples[-1][0] if samples else 0.0)
        out.append(f"{at:.2f}")
    return "first " + out[0] + ", tenths " + " ".join(out[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="recipients")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="ms the sink waits before each answer"
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="connections of the pipelined client"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="K solo `mailing worker -Q updates` processes instead of the default command",
    )
    parser.add_argument(
        "--database-server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--keep-sink-messages", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # A SIGTERM (timeout, Ctrl-C of a parent) still stops the workers and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    db_url, db_name = make_database(args.database_server)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_DATABASE_URL=db_url,
        MAILING_BROKER_URL=args.broker,
        MAILING_REDIS_URL=args.redis,
        MAILING_SMTP_HOST="127.0.0.1",
        MAILING_SMTP_PORT=str(port),
        MAILING_SECRET_KEYS="bench-secret-key-0123456789-abcdefghijklmnop",
        MAILING_BASE_URL="https://updates.example.org",
    )
    if not args.workers:
        env["MAILING_ENV"] = "production"  # every other setting at its default
    os.environ.update(env)

    from mailing import migrate

    migrate.upgrade(db_url)
    clear_broker(args.broker)
    # The relay-connection leases of a previous run's workers (killed at its end) would hold
    # the connection cap for 30 s more: a run right after another got 2 of its 48 lanes.
    import redis

    from mailing.mail.lanes import LEASES_KEY

    redis.Redis.from_url(args.redis).delete(LEASES_KEY)

    count = mp.Value("q", 0)
    last = mp.Value("d", 0.0)
    ready = mp.Event()
    sink = mp.Process(
        target=run_relay, args=(port, count, last, ready, None, args.latency), daemon=True
    )
    sink.start()
    ready.wait(10)

    workers: list[subprocess.Popen[bytes]] = []
    try:
        t = time.time()
        add_subscribers(args.n)
        print(f"setup: {args.n} subscribers in {time.time() - t:.1f}s", flush=True)
        if args.workers:
            workers = start_workers(args.workers, env)
            described = f"{args.workers} x `mailing worker -Q updates --pool solo`"
        else:
            workers = [start_default_worker(env)]
            described = f"`mailing worker` (production defaults, {os.cpu_count()} cores)"

        from mailing import sending, updates
        from mailing.db import session_scope
        from workers.celery_app import configure
        from workers.enqueue import publish_update_batches

        configure()
        with session_scope() as session:
            update = updates.create_draft(
                session,
                None,
                "Benchmark update",
                "# A heading\n\nSome **Markdown** with [a link](https://www.london.gov.uk/).\n\n"
                + "A paragraph of text about health inequalities in London. " * 20,
                ["healthy-minds", "healthy-places"],
            )
            update_id = update.id
        assert update_id is not None

        cpu_before = [tree_cpu(p.pid) for p in workers] + [cpu_seconds(sink.pid or 0)]
        services_before = [processes_cpu("postgres"), processes_cpu("redis-server")]
        t0 = time.time()
        with session_scope() as session:
            started = sending.request_send(session, update_id, None, publish_update_batches)
        t_started = time.time()
        samples: list[tuple[float, int]] = []  # (seconds since the request, messages so far)
        while count.value < started.recipients:
            time.sleep(0.05)
            samples.append((time.time() - t0, count.value))
            if time.time() - t0 > 3600:
                raise RuntimeError(f"only {count.value} of {started.recipients} arrived")
        e2e_seconds = last.value - t0
        while True:
            with session_scope() as session:
                live = sending.progress(session, update_id)
            if live.finished:
                break
            time.sleep(0.1)
        pids = [pid for p in workers for pid in tree_pids(p.pid)]
        rss = [peak_rss_kib(pid) for pid in pids]
        cpu_after = [tree_cpu(p.pid) for p in workers] + [cpu_seconds(sink.pid or 0)]
        cpu = [a - b for a, b in zip(cpu_after, cpu_before, strict=True)]
        database_cpu, redis_cpu = (
            after - before
            for after, before in zip(
                [processes_cpu("postgres"), processes_cpu("redis-server")],
                services_before,
                strict=True,
            )
        )
        load = os.getloadavg()[0]

        # The ceilings: the same number of pre-built messages of the same size, same sink.
        with session_scope() as session:
            from mailing.models import Update

            row = session.get(Update, update_id)
            assert row is not None
            prepared = updates.prepare_update_email(row)
        token = "x" * 90
        rcpts = [f"reader{i}@example.net" for i in range(started.recipients)]
        msgs = [
            prepared.personalise(updates.recipient_values(r, token + "a", token + "b"))
            for r in rcpts
        ]
        stuffed = [_stuffed(m) for m in msgs]  # pre-built: the ceilings do no work
        c = args.connections
        pool_seconds = pool_ceiling(port, c, stuffed, prepared.envelope_from, rcpts, count, last)
        e2e = started.recipients / e2e_seconds
        pool = len(stuffed) / pool_seconds
        print(f"relay latency:         {args.latency:g} ms a line")
        print(f"recipients:            {started.recipients}")
        print(f"service:               {described}")
        print(f"start_send (request):  {t_started - t0:.2f}s")
        print(f"service, end to end:   {e2e_seconds:.2f}s  = {e2e:,.0f} emails/s")
        print(f"{c}-connection pipelined client: {pool_seconds:.2f}s  = {pool:,.0f} emails/s")
        print(f"ratio to it:           {e2e / pool:.2f}")
        print(f"timeline (s: sent):    {timeline(samples, started.recipients)}")
        if not args.latency:  # four round trips a message: only at loopback
            k = args.workers or os.cpu_count() or 1
            raw_seconds = ceiling(blast, port, k, msgs, prepared.envelope_from, rcpts, count, last)
            piped_seconds = ceiling(
                blast_pipelined, port, k, stuffed, prepared.envelope_from, rcpts, count, last
            )
            raw, piped = len(stuffed) / raw_seconds, len(stuffed) / piped_seconds
            print(f"raw smtplib ceiling ({k} conn.): {raw_seconds:.2f}s  = {raw:,.0f} emails/s")
            print(f"ratio:                 {e2e / raw:.2f}")
            print(f"pipelined ceiling ({k} conn.):   {piped_seconds:.2f}s  = {piped:,.0f} emails/s")
            print(f"ratio to pipelined:    {e2e / piped:.2f}")
        print(
            "worker peak RSS:       "
            + ", ".join(f"{r / 1024:.1f} MiB" for r in rss)
            + f" (max {max(rss) / 1024:.1f} MiB)"
        )
        print(
            f"CPU during the send:   workers {sum(cpu[:-1]):.1f}s "
            f"({sum(cpu[:-1]) * 1e6 / started.recipients:.0f} us/email), sink {cpu[-1]:.1f}s, "
            f"PostgreSQL {database_cpu:.1f}s, Redis {redis_cpu:.1f}s, "
            f"of {os.cpu_count()} cores x {e2e_seconds:.1f}s; load average {load:.1f}"
        )
        print(f"final: sent={live.sent} failed={live.failed} pending={live.pending}")
    finally:
        stop_groups(workers)
        sink.terminate()
        from mailing.db import reset_engine

        reset_engine()
        drop_database(args.database_server, db_name)
        clear_broker(args.broker)


if __name__ == "__main__":
    main()
