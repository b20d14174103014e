"""Benchmark of sign-ups against the served app on PostgreSQL + Redis, with /healthz as baseline.

    .venv/bin/python bench/subscribe.py --n 3000 --concurrency 32 --workers 2 [--profile FILE]

Creates a throwaway PostgreSQL database and migrates it, starts `mailing serve` on a free
loopback port (Redis for the broker and the rate limits, the per-IP limit raised for the run),
then drives the same number of concurrent requests at `GET /healthz` (the baseline: the
framework and the server alone) and at `POST /subscriptions` (distinct addresses), and prints
requests a second and p50/p99 latency for each, and their ratio. Afterwards it checks that
every sign-up that got a 202 is in the database. Not a test: it asserts nothing but that check.
Loopback only; every loop is bounded in count and time. The load comes from a minimal asyncio
HTTP/1.1 client over keep-alive connections (see Connection): on 2 cores a heavier client would
take the CPU the server is being measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from throwaway import (  # noqa: E402
    drop_database,
    free_port,
    make_database,
    processes_cpu,
    tree_cpu,
)

MAILING = [sys.executable, "-m", "mailing.cli"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams.

    A minimal client on purpose: httpx spends about a millisecond of CPU a request, and on a
    2-core machine the load generator would otherwise eat the CPU the server is measured on.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        status = int(headers[9:12])
        length = 0
        for line in headers.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(
    port: int, n: int, concurrency: int, request: Any, time_limit: float, per_connection: int = 20
) -> tuple[float, list[float], dict[int, int], list[int]]:
    """n requests over `concurrency` connections; returns elapsed, latencies, statuses, 202s.

    Each connection is replaced after `per_connection` requests: with several uvicorn workers
    sharing one listening socket, a burst of long-lived connections is all accepted by one
    worker, and the others would sit idle (as residents are many clients, not one).
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted: list[int] = []
    next_i = 0
    deadline = time.monotonic() + time_limit

    async def one_connection() -> None:
        nonlocal next_i
        conn = Connection("127.0.0.1", port)
        used = 0
        try:
            while next_i < n and time.monotonic() < deadline:
                i = next_i
                next_i += 1
                if used == per_connection:
                    await conn.close()
                    conn, used = Connection("127.0.0.1", port), 0
                used += 1
                t0 = time.perf_counter()
                try:
                    status = await request(conn, i)
                except (OSError, asyncio.IncompleteReadError):
                    await conn.close()
                    conn = Connection("127.0.0.1", port)
                    status = 0
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 202:
                    accepted.append(i)
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies, statuses, accepted


def _cpu(server: int) -> list[float]:
    """CPU seconds so far: the server (with its workers), PostgreSQL, Redis, this client."""
    times = os.times()
    return [
        tree_cpu(server),
        processes_cpu("postgres"),
        processes_cpu("redis-server"),
        times.user + times.system,
    ]


def report(name: str, elapsed: float, latencies: list[float], statuses: dict[int, int]) -> float:
    rps = len(latencies) / elapsed
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    mean = statistics.fmean(latencies) * 1000
    print(
        f"{name:<22} {len(latencies):>6} requests in {elapsed:6.2f} s: {rps:8.1f} req/s, "
        f"p50 {p50:6.1f} ms, p99 {p99:6.1f} ms, mean {mean:6.1f} ms, "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--per-connection", type=int, default=20, help="requests before a client reconnects"
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres", help="server URL"
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--time-limit", type=float, default=120, help="seconds per phase, at most")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the server with py-spy during the sign-up phase (collapsed stacks to FILE)",
    )
    args = parser.parse_args()

    db_url, db_name = make_database(args.pg)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run_id = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_ENV="dev",
        MAILING_DATABASE_URL=db_url,
        MAILING_BROKER_URL=args.broker,
        MAILING_REDIS_URL=args.redis,
        MAILING_SECRET_KEYS="bench-secret-" + "b" * 40,
        MAILING_RATE_LIMIT_PER_IP=str(10 * args.n + 1000),
        MAILING_BASE_URL=base,
    )
    server: subprocess.Popen[bytes] | None = None
    log_path = Path(f"/tmp/mailing-bench-serve-{run_id}.log")
    try:
        subprocess.run([*MAILING, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [*MAILING, "serve", "--port", str(port), "--workers", str(args.workers)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"mailing serve did not become ready; see {log_path}")
            time.sleep(0.2)  # polling readiness with a deadline

        def healthz(conn: Connection, i: int) -> Any:
            return conn.request("GET", "/healthz")

        def signup_as(prefix: str) -> Any:
            def signup(conn: Connection, i: int) -> Any:
                body = json.dumps({"email": f"{prefix}-{run_id}-{i}@example.org", "consent": True})
                return conn.request("POST", "/subscriptions", body.encode())

            return signup

        print(
            f"mailing serve --workers {args.workers} on {base}; PostgreSQL {db_name}; "
            f"broker {args.broker}; concurrency {args.concurrency}; {os.cpu_count()} cores"
        )
        asyncio.run(drive(port, 200, args.concurrency, signup_as("warm"), args.time_limit))
        asyncio.run(drive(port, 200, args.concurrency, healthz, args.time_limit))

        h_elapsed, h_lat, h_status, _ = asyncio.run(
            drive(port, args.n, args.concurrency, healthz, args.time_limit, args.per_connection)
        )
        profiler = None
        if args.profile:
            profiler = subprocess.Popen(
                [
                    *(str(Path(sys.executable).parent / "py-spy"), "record"),
                    *("--pid", str(server.pid), "--subprocesses"),
                    *("--format", "raw", "--rate", "100", "--gil", "-o", args.profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)  # py-spy attaches before the load starts
        cpu_before = _cpu(server.pid)
        s_elapsed, s_lat, s_status, accepted = asyncio.run(
            drive(
                port,
                args.n,
                args.concurrency,
                signup_as("bench"),
                args.time_limit,
                args.per_connection,
            )
        )
        cpu = [after - before for after, before in zip(_cpu(server.pid), cpu_before, strict=True)]
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(timeout=30)
        h_rps = report("GET /healthz", h_elapsed, h_lat, h_status)
        s_rps = report("POST /subscriptions", s_elapsed, s_lat, s_status)
        print(f"sign-ups / healthz throughput ratio: {s_rps / h_rps:.2f}")
        print(
            f"CPU during the sign-ups: server {cpu[0]:.1f}s ({cpu[0] * 1e6 / args.n:.0f} us each), "
            f"PostgreSQL {cpu[1]:.1f}s, Redis {cpu[2]:.1f}s, client {cpu[3]:.1f}s, "
            f"of {os.cpu_count()} cores x {s_elapsed:.1f}s"
        )
        p99 = percentile(s_lat, 99) * 1000
        print(
            f"target (sign-ups >= 0.15 of /healthz, p99 < 100 ms): "
            f"{'met' if s_rps >= 0.15 * h_rps and p99 < 100 else 'NOT met'}"
        )

        engine = sa.create_engine(db_url)
        with engine.connect() as conn:
            stored = set(
                conn.execute(
                    sa.text("SELECT email_key FROM subscriber WHERE email_key LIKE :p"),
                    {"p": f"bench-{run_id}-%"},
                ).scalars()
            )
        engine.dispose()
        missing = [i for i in accepted if f"bench-{run_id}-{i}@example.org" not in stored]
        print(
            f"accepted (202): {len(accepted)}; in the database: {len(accepted) - len(missing)}; "
            f"missing: {len(missing)}"
        )
        if missing:
            sys.exit(1)
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        import redis

        # The run enqueued confirmation emails that no worker will send: drop them. Only this
        # run's own broker database and its rate-limit keys are touched.
        redis.Redis.from_url(args.broker).flushdb()
        limits = redis.Redis.from_url(args.redis)
        for key in limits.scan_iter(match="mailing:*"):
            limits.delete(key)
        drop_database(args.pg, db_name)


if __name__ == "__main__":
    main()
