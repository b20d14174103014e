"""Benchmark of the update pipeline end to end, against the raw SMTP ceiling of the same machine.

    .venv/bin/python bench/send.py --n 100000 --workers 2

Creates a throwaway PostgreSQL database, N active subscribers, K `mailing worker` processes on
the Redis broker, and a minimal asyncio SMTP sink in its own process. It times the send from the
`start_send` call (what POST /admin/updates/{id}/send does) to the last message accepted by the
sink, then blasts the same number of pre-built messages over K connections to the same sink
twice: with smtplib's `sendmail` (the raw ceiling the performance issue set: four round trips a
message), and pipelined as `Mailer.send_many` talks, pre-stuffed, with nothing else to do (the
stricter ceiling: one round trip a message). It prints all three, the ratios, and the workers'
peak RSS (VmHWM).
Not a test: it asserts nothing but that every message arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
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
from throwaway import (  # noqa: E402
    cpu_seconds,
    drop_database,
    free_port,
    make_database,
    processes_cpu,
    stop_groups,
)

from mailing.mail.relay import _stuffed  # noqa: E402

# --- A minimal SMTP sink (one process, asyncio): counts messages, remembers the last one's time


class SinkProtocol(asyncio.Protocol):
    def __init__(self, count: Any, last: Any, arrivals: Any = None) -> None:
        self.count, self.last = count, last
        self.arrivals = arrivals  # a queue for (recipient, time) of "probe" recipients
        self.rcpt = b""
        self.buffer = bytearray()
        self.scan = 0  # where to resume looking for the end of a message
        self.in_data = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n", self.scan)
                if end < 0:
                    self.scan = max(0, len(self.buffer) - 4)
                    return
                del self.buffer[: end + 5]
                self.scan = 0
                self.in_data = False
                with self.count.get_lock():
                    self.count.value += 1
                self.last.value = time.time()
                if self.arrivals is not None and self.rcpt.startswith(b"<probe"):
                    self.arrivals.put((self.rcpt.decode(), time.time()))
                self.transport.write(b"250 OK queued\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            verb = bytes(self.buffer[:4]).upper()
            if verb == b"RCPT":
                self.rcpt = bytes(self.buffer[:end]).partition(b":")[2].strip().lower()
            del self.buffer[: end + 2]
            if verb == b"EHLO":
                self.transport.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go ahead\r\n")
                # so that the end marker is found even for an empty body
                self.buffer[0:0] = b"\r\n"
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 OK\r\n")


def run_sink(port: int, count: Any, last: Any, ready: Any, arrivals: Any = None) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SinkProtocol(count, last, arrivals), "127.0.0.1", port, backlog=512
        )
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="recipients")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--database-server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--keep-sink-messages", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

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
    os.environ.update(env)

    from mailing import migrate

    migrate.upgrade(db_url)
    clear_broker(args.broker)

    count = mp.Value("q", 0)
    last = mp.Value("d", 0.0)
    ready = mp.Event()
    sink = mp.Process(target=run_sink, args=(port, count, last, ready), daemon=True)
    sink.start()
    ready.wait(10)

    workers: list[subprocess.Popen[bytes]] = []
    try:
        t = time.time()
        add_subscribers(args.n)
        print(f"setup: {args.n} subscribers in {time.time() - t:.1f}s", flush=True)
        workers = start_workers(args.workers, env)

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

        cpu_before = [cpu_seconds(p.pid) for p in workers] + [cpu_seconds(sink.pid or 0)]
        services_before = [processes_cpu("postgres"), processes_cpu("redis-server")]
        t0 = time.time()
        with session_scope() as session:
            started = sending.request_send(session, update_id, None, publish_update_batches)
        t_started = time.time()
        while count.value < started.recipients:
            time.sleep(0.05)
            if time.time() - t0 > 1800:
                raise RuntimeError(f"only {count.value} of {started.recipients} arrived")
        e2e_seconds = last.value - t0
        while True:
            with session_scope() as session:
                live = sending.progress(session, update_id)
            if live.finished:
                break
            time.sleep(0.1)
        rss = [peak_rss_kib(p.pid) for p in workers]
        cpu_after = [cpu_seconds(p.pid) for p in workers] + [cpu_seconds(sink.pid or 0)]
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

        # The ceiling: the same number of pre-built messages over the same number of connections.
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
        k = args.workers
        raw_seconds = ceiling(blast, port, k, msgs, prepared.envelope_from, rcpts, count, last)
        stuffed = [_stuffed(m) for m in msgs]  # pre-built: the stricter ceiling does no work
        piped_seconds = ceiling(
            blast_pipelined, port, k, stuffed, prepared.envelope_from, rcpts, count, last
        )

        e2e = started.recipients / e2e_seconds
        raw = len(msgs) / raw_seconds
        piped = len(msgs) / piped_seconds
        print(f"recipients:            {started.recipients}")
        print(f"workers:               {k} (solo pool, one SMTP connection each)")
        print(f"start_send (rows):     {t_started - t0:.2f}s")
        print(f"end to end:            {e2e_seconds:.2f}s  = {e2e:,.0f} emails/s")
        print(f"raw smtplib ceiling:   {raw_seconds:.2f}s  = {raw:,.0f} emails/s")
        print(f"ratio:                 {e2e / raw:.2f}")
        print(f"raw pipelined ceiling: {piped_seconds:.2f}s  = {piped:,.0f} emails/s")
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
