"""Soak benchmark: sign-ups, confirmations, unsubscribes and large sends under scheduled faults.

    .venv/bin/python bench/soak.py --minutes 20 --send-size 50000

Runs its own PostgreSQL cluster (initdb into a temporary directory, port 5440), its own
redis-server (port 6390) and an aiosmtpd capture relay, so it can restart and drop them without
touching anyone else's. On production settings (MAILING_ENV=production, every other setting at
its default but the per-IP limit) it starts a real `mailing serve`, `--workers` plain
`mailing worker` processes and one `mailing beat`, seeds `--send-size` active subscribers, and for
`--minutes` drives, all at once and only through public commands and HTTP:

- sign-ups (`POST /subscriptions`, new addresses, `--signup-rate` a second);
- confirmations: each confirmation email the relay captures, its link followed (`POST /confirm/…`);
- one-click unsubscribes (`POST` to an update copy's `List-Unsubscribe` URL) while sends run;
- sends, one after another: `POST /admin/updates` then `POST /admin/updates/{id}/send` with a
  staff API token, polled with `GET /admin/updates/{id}` until `sent`;

while every `--fault-every` seconds, in turn, it SIGKILLs a worker's process group (and starts it
again), restarts PostgreSQL (immediate stop, a crash), restarts Redis (no persistence: the broker's
queues and the rate-limit counters are lost) and drops the relay (SIGKILL, then none for
`--relay-down` seconds). Then it lets everything finish and checks the ledger (the `delivery`
table) against the capture. It prints the figures and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from throwaway import free_port, stop_groups  # noqa: E402

PG_BIN = (
    sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    if Path("/usr/lib/postgresql").exists()
    else None
)
CHUNK = 50  # MAILING_SEND_COMMIT_CHUNK's default: what a killed process may send again
UNSUB = re.compile(r"<(https?://[^>]+/unsubscribe/[^>]+)>")
CONFIRM = re.compile(r"https?://\S+?/confirm/[A-Za-z0-9._\-]+")


# --- The capture relay (its own process, so it can be killed) -----------------------------------


def capture_main(port: int, path: str) -> None:
    """aiosmtpd relay: writes one JSON line per message (flushed) before answering 250."""
    import email
    import email.policy
    from email.parser import BytesHeaderParser

    from aiosmtpd.controller import Controller

    out = open(path, "a", buffering=1)  # noqa: SIM115
    headers = BytesHeaderParser()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            raw = envelope.content
            head = headers.parsebytes(raw)
            subject = str(head.get("Subject", ""))
            record: dict[str, Any] = {"t": time.time(), "subject": subject}
            unsub = UNSUB.search(re.sub(r"\r?\n[ \t]+", " ", str(head.get("List-Unsubscribe", ""))))
            record["unsub"] = unsub.group(1) if unsub else None
            if subject.startswith("Confirm your subscription"):
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                body = msg.get_body(("plain",))
                found = CONFIRM.search(body.get_content() if body else "")
                record["confirm"] = found.group(0) if found else None
            for rcpt in envelope.rcpt_tos:
                out.write(json.dumps({**record, "to": rcpt.lower()}) + "\n")
            return "250 OK queued"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


# --- Private PostgreSQL and Redis --------------------------------------------------------------


class Postgres:
    def __init__(self, port: int) -> None:
        assert PG_BIN is not None, "PostgreSQL server binaries not found"
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="bench_soak_pg_")
        self.user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.user:
            shutil.chown(self.dir, "postgres")
        self.run("initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self.start()

    def run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.user, str(PG_BIN / tool), *args], check=True, capture_output=True)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self.run(
            "pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-o", opts, "-w", "start"
        )

    def stop(self, mode: str = "immediate") -> None:
        self.run("pg_ctl", "-D", f"{self.dir}/data", "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("fast")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


# --- The run's state: every HTTP answer, every captured message ---------------------------------


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str, int]] = []  # (time, route, status; 0 = no answer)
        self.windows: list[tuple[str, float, float]] = []  # (part, went down, back up)
        self.accepted: set[str] = set()
        self.confirmed: set[str] = set()
        self.confirm_links: collections.deque[tuple[str, str]] = collections.deque()
        self.copies: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
        self.unsub_links: dict[str, str] = {}
        self.unsubscribed: dict[str, float] = {}  # address -> when the 200 came back
        self.updates: list[int] = []
        self.subjects: dict[str, int] = {}
        self.processes_hit = 0  # worker processes alive in a group killed or hit by a fault
        self.stop = threading.Event()
        self.exits: list[tuple[float, str, int]] = []  # processes that exited by themselves


def call(state: State, client: Any, method: str, url: str, route: str, **kw: Any) -> Any:
    import httpx

    try:
        answer = client.request(method, url, timeout=30, **kw)
    except httpx.HTTPError:
        with state.lock:
            state.answers.append((time.time(), route, 0))
        return None
    with state.lock:
        state.answers.append((time.time(), route, answer.status_code))
    return answer


def persist(state: State, client: Any, method: str, url: str, route: str, **kw: Any) -> Any:
    """Retry while a part is down (503 or no answer) until a real answer."""
    while True:
        answer = call(state, client, method, url, route, **kw)
        if answer is not None and answer.status_code != 503:
            return answer
        time.sleep(1)


def tail_capture(state: State, path: Path, base: str, done: threading.Event) -> None:
    offset, last = 0, False
    while not last:
        last = done.is_set()
        with path.open() as f:
            f.seek(offset)
            lines = f.readlines()
            if lines and not lines[-1].endswith("\n"):
                lines.pop()
            offset += sum(len(line.encode()) for line in lines)
        with state.lock:
            for line in lines:
                rec = json.loads(line)
                if rec.get("confirm"):
                    link = re.sub(r"^https?://[^/]+", base, rec["confirm"])
                    state.confirm_links.append((rec["to"], link))
                elif rec["subject"] in state.subjects:
                    state.copies[rec["subject"]].append((rec["to"], rec["t"]))
                    if rec["unsub"]:
                        state.unsub_links[rec["to"]] = re.sub(
                            r"^https?://[^/]+", base, rec["unsub"]
                        )
        time.sleep(0.5)


def signups(state: State, base: str, rate: float) -> None:
    import httpx

    with httpx.Client() as client:
        n = 0
        while not state.stop.is_set():
            address = f"soak-{n}@example.org"
            n += 1
            answer = call(
                state,
                client,
                "POST",
                f"{base}/subscriptions",
                "signup",
                json={"email": address, "consent": True},
            )
            if answer is not None and answer.status_code == 202:
                with state.lock:
                    state.accepted.add(address)
            time.sleep(1 / rate)


def confirmations(state: State, done: threading.Event) -> None:
    import httpx

    with httpx.Client() as client:
        while not done.is_set():
            with state.lock:
                item = state.confirm_links.popleft() if state.confirm_links else None
            if item is None:
                time.sleep(0.2)
                continue
            address, link = item
            answer = persist(state, client, "POST", link, "confirm")
            if answer.status_code < 400:
                with state.lock:
                    state.confirmed.add(address)


def unsubscribes(state: State, every: float) -> None:
    import httpx

    with httpx.Client() as client:
        while not state.stop.is_set():
            time.sleep(every)
            with state.lock:
                choices = [a for a in state.unsub_links if a not in state.unsubscribed]
            if not choices:
                continue
            address = random.choice(choices)
            answer = persist(
                state,
                client,
                "POST",
                state.unsub_links[address],
                "unsubscribe",
                content="List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            if answer.status_code == 200:
                with state.lock:
                    state.unsubscribed[address] = time.time()


def sends(state: State, base: str, token: str, send_wait: float) -> None:
    import httpx

    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=auth) as client:
        k = 0
        while not state.stop.is_set():
            k += 1
            subject = f"Soak update {k}"
            body = {
                "subject": subject,
                "body": "Some **text**. " * 40,
                "themes": ["healthy-minds", "healthy-places"],
            }
            draft = persist(state, client, "POST", f"{base}/admin/updates", "staff", json=body)
            assert draft.status_code == 201, draft.text
            update_id = draft.json()["id"]
            with state.lock:
                state.subjects[subject] = update_id
                state.updates.append(update_id)
            started = persist(
                state, client, "POST", f"{base}/admin/updates/{update_id}/send", "staff"
            )
            assert started.status_code == 202, started.text
            wait_sent(state, client, base, update_id, time.time() + send_wait)


def wait_sent(state: State, client: Any, base: str, update_id: int, deadline: float) -> str:
    status = "?"
    while time.time() < deadline:
        view = persist(state, client, "GET", f"{base}/admin/updates/{update_id}", "staff")
        status = view.json()["status"]
        if status not in ("sending", "scheduled"):
            return str(status)
        time.sleep(2)
    return status


# --- Faults on a schedule ------------------------------------------------------------------------


def group_size(pgid: int) -> int:
    n = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == pgid:
                n += 1
        except OSError:
            continue
    return n


def worker_processes(workers: list[subprocess.Popen[bytes]]) -> int:
    """Pool processes (that send) of every worker: the group less its main process."""
    return sum(max(0, group_size(w.pid) - 1) for w in workers)


def faults(state: State, ctx: dict[str, Any], every: float, down: float, relay_down: float) -> None:
    kinds = ["worker", "postgres", "redis", "relay"]
    i = 0
    while not state.stop.wait(every):
        kind = kinds[i % len(kinds)]
        t0 = time.time()
        if kind == "worker":
            with ctx["lock"]:  # the supervisor leaves this one alone
                workers = ctx["workers"]
                victim = workers[(i // len(kinds)) % len(workers)]
                state.processes_hit += max(1, group_size(victim.pid) - 1)
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait()
                time.sleep(down)
                workers[workers.index(victim)] = ctx["spawn"](["worker"])
        elif kind == "postgres":
            state.processes_hit += worker_processes(ctx["workers"])
            ctx["pg"].stop("immediate")
            time.sleep(down)
            ctx["pg"].start()
        elif kind == "redis":
            ctx["redis"].stop()
            time.sleep(down)
            ctx["redis"].start()
        else:
            state.processes_hit += worker_processes(ctx["workers"])
            ctx["relay"].kill()
            ctx["relay"].wait()
            time.sleep(relay_down)
            ctx["relay"] = ctx["start_relay"]()
        with state.lock:
            state.windows.append((kind, t0, time.time()))
        print(f"  fault {i + 1}: {kind} down {time.time() - t0:.1f}s", flush=True)
        i += 1


def supervise(state: State, ctx: dict[str, Any], done: threading.Event) -> None:
    """What compose's `restart: unless-stopped` does: start again a process that exited by itself
    (counted: the soak did not stop it)."""
    while not done.wait(1):
        with ctx["lock"]:
            for name, procs in (("worker", ctx["workers"]), ("other", ctx["others"])):
                for i, proc in enumerate(procs):
                    if proc.poll() is None:
                        continue
                    cmd = ctx["commands"][proc.pid]
                    state.exits.append((time.time(), cmd[0], proc.returncode))
                    print(
                        f"  `mailing {cmd[0]}` exited by itself ({proc.returncode}); started again",
                        flush=True,
                    )
                    if name == "worker":
                        state.processes_hit += (
                            os.cpu_count() or 1
                        ) + 1  # its pool and reserved processes
                    procs[i] = ctx["spawn"](cmd)


# --- Set-up, run, check --------------------------------------------------------------------------


def seed(db_url: str, n: int) -> None:
    import psycopg

    now = datetime.now(UTC)
    url = db_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY subscriber (email, email_key, status, token_version, created_at, "
            "updated_at, confirmed_at) FROM STDIN"
        ) as copy:
            for i in range(n):
                e = f"reader{i}@example.net"
                copy.write_row((e, e, "active", 1, now, now, now))
        cur.execute(
            "INSERT INTO subscriber_theme (subscriber_id, theme) SELECT id, "
            "CASE WHEN id % 2 = 0 "
            "THEN 'healthy-minds' ELSE 'healthy-places' END FROM subscriber"
        )


def ledger(db_url: str, update_id: int) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute(
            "SELECT lower(s.email), d.status::text FROM delivery d "
            "JOIN subscriber s ON s.id = d.subscriber_id WHERE d.update_id = %s",
            (update_id,),
        ).fetchall()
    return [(r[0], r[1].lower()) for r in rows]


def check(state: State, db_url: str, statuses: dict[int, str], grace: float) -> bool:
    ok = True

    def verdict(passed: bool, text: str) -> None:
        nonlocal ok
        ok = ok and passed
        print(f"  [{'ok' if passed else 'FAIL'}] {text}")

    print("\nchecks (the ledger against the capture):")
    unconfirmed = state.accepted - state.confirmed
    good = len(state.accepted & state.confirmed)
    verdict(
        not unconfirmed,
        f"sign-ups answered 202: {len(state.accepted)}; their confirmation link arrived and "
        f"worked: {good}; not: {len(unconfirmed)}",
    )
    lost = dups = total = stray = after = failed = early = 0
    bad_status = [u for u, s in statuses.items() if s != "sent"]
    for subject, update_id in state.subjects.items():
        first: dict[str, float] = {}
        for address, at in state.copies[subject]:
            first[address] = min(at, first.get(address, at))
            gone = state.unsubscribed.get(address)
            if gone is not None and at > gone:
                after += 1
        got = collections.Counter(a for a, _ in state.copies[subject])
        total += sum(got.values())
        dups += sum(c - 1 for c in got.values())
        rows = ledger(db_url, update_id)
        sent = {a for a, s in rows if s == "sent"}
        cancelled = {a for a, s in rows if s == "cancelled"}
        failed += sum(1 for _, s in rows if s == "failed")
        lost += len(sent - set(got)) + sum(1 for _, s in rows if s == "pending")
        lost += len(cancelled - set(state.unsubscribed))  # cancelled, yet never asked to stop
        # taken by the relay, its commit lost to a fault, then cancelled by the unsubscribe
        taken = {a for a in set(got) & cancelled if first[a] <= state.unsubscribed.get(a, 0)}
        early += len(taken)
        stray += len(set(got) - sent - taken)
        print(
            f"  update {update_id}: ledger {len(rows)} rows ({len(sent)} sent, {len(cancelled)} "
            f"cancelled), captured {sum(got.values())} copies to {len(got)} addresses"
        )
    verdict(not bad_status, f"sends: {len(statuses)}, all ended 'sent' (not: {bad_status})")
    verdict(lost == 0, f"updates lost (a recipient in the ledger without a copy): {lost}")
    verdict(
        stray == 0 and failed == 0,
        f"copies the ledger does not hold as sent: {stray}; failed: {failed} (and {early} "
        "taken before the person's unsubscribe, whose commit a fault lost: ledger 'cancelled')",
    )
    bound = CHUNK * state.processes_hit
    verdict(
        dups <= bound,
        f"duplicates: {dups} of {total} copies; bound {bound} ({CHUNK} a commit chunk x "
        f"{state.processes_hit} worker processes killed or hit by a fault)",
    )
    verdict(
        after == 0,
        f"unsubscribes: {len(state.unsubscribed)}; copies taken after one returned: {after}",
    )
    by_status = collections.Counter(s for _, _, s in state.answers)
    down = [(a - 1, b + grace) for kind, a, b in state.windows if kind in ("postgres", "redis")]
    odd = [
        (t, r) for t, r, s in state.answers if s == 503 and not any(a <= t <= b for a, b in down)
    ]
    five = sum(n for s, n in by_status.items() if s >= 500 and s != 503)
    answers = dict(sorted(by_status.items()))
    verdict(five == 0, f"HTTP answers: {answers} (0 = none); 5xx other than 503: {five}")
    verdict(not odd, f"503s outside a PostgreSQL/Redis outage (+{grace:.0f}s): {len(odd)}")
    for t, route in odd[:5]:
        ended = [(t - b, kind) for kind, _, b in state.windows if b <= t]
        when = f"{min(ended)[0]:.0f}s after the {min(ended)[1]} fault ended" if ended else "early"
        print(f"    a 503 on {route}, {when}")
    verdict(by_status.get(0, 0) == 0, f"requests with no answer: {by_status.get(0, 0)}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--send-size", type=int, default=50_000, help="subscribers seeded")
    parser.add_argument("--workers", type=int, default=2, help="`mailing worker` processes")
    parser.add_argument("--signup-rate", type=float, default=4, help="sign-ups a second")
    parser.add_argument("--unsubscribe-every", type=float, default=2, help="seconds")
    parser.add_argument("--fault-every", type=float, default=60, help="seconds between faults")
    parser.add_argument(
        "--down", type=float, default=8, help="seconds PostgreSQL/Redis/a worker stay down"
    )
    parser.add_argument("--relay-down", type=float, default=30, help="seconds the relay stays down")
    parser.add_argument(
        "--drain", type=float, default=900, help="seconds allowed to finish at the end"
    )
    parser.add_argument("--pg-port", type=int, default=5440)
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--capture", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture:
        return capture_main(int(args.capture[0]), args.capture[1])

    work = Path(tempfile.mkdtemp(prefix="bench_soak_"))
    capture_file = work / "capture.jsonl"
    capture_file.touch()
    smtp_port, http_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    print(
        f"setting up: PostgreSQL on {args.pg_port}, Redis on {args.redis_port}, "
        f"relay on {smtp_port}"
    )
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:{args.pg_port}/bench_soak"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_ENV="production",
        MAILING_DATABASE_URL=db_url,
        MAILING_BROKER_URL=f"redis://127.0.0.1:{args.redis_port}/0",
        MAILING_REDIS_URL=f"redis://127.0.0.1:{args.redis_port}/1",
        MAILING_SMTP_HOST="127.0.0.1",
        MAILING_SMTP_PORT=str(smtp_port),
        MAILING_SECRET_KEYS="bench-soak-secret-key-0123456789-abcdefghijklmnop",
        MAILING_BASE_URL="https://updates.example.org",
        MAILING_RATE_LIMIT_PER_IP="1000000",
    )
    mailing = str(Path(sys.executable).with_name("mailing"))
    logs = work / "logs"
    logs.mkdir()

    commands: dict[int, list[str]] = {}

    def spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(logs / f"{cmd[0]}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [mailing, *cmd], env=env, stdout=log, stderr=log, start_new_session=True
        )
        commands[proc.pid] = cmd
        return proc

    def start_relay() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--capture", str(smtp_port), str(capture_file)],
            start_new_session=True,
        )
        wait_port(smtp_port)
        return proc

    procs: list[subprocess.Popen[bytes]] = []
    ctx: dict[str, Any] = {
        "spawn": spawn,
        "start_relay": start_relay,
        "lock": threading.Lock(),
        "commands": commands,
        "others": procs,
    }
    supervised = threading.Event()
    state = State()
    ok = False
    try:
        ctx["pg"] = pg = Postgres(args.pg_port)
        ctx["redis"] = Redis(args.redis_port)
        subprocess.run(
            [
                *pg.user,
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(args.pg_port),
                "-U",
                "postgres",
                "bench_soak",
            ],
            check=True,
        )
        subprocess.run([mailing, "migrate"], env=env, check=True, capture_output=True)
        seed(db_url, args.send_size)
        made = subprocess.run(
            [mailing, "staff", "create", "soak@example.org", "--role", "admin"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        token = made.stdout.strip().splitlines()[-1]
        ctx["relay"] = start_relay()
        ctx["workers"] = [spawn(["worker"]) for _ in range(args.workers)]
        procs += [spawn(["beat"]), spawn(["serve", "--port", str(http_port)])]
        wait_port(http_port, 60)
        threading.Thread(target=supervise, args=(state, ctx, supervised), daemon=True).start()
        print(
            f"running {args.minutes:g} min: {args.send_size:,} subscribers, "
            f"{args.workers} workers, "
            f"a fault every {args.fault_every:g}s (worker, PostgreSQL, Redis, relay in turn)",
            flush=True,
        )
        confirm_done, tail_done = threading.Event(), threading.Event()
        threads = [
            threading.Thread(
                target=tail_capture, args=(state, capture_file, base, tail_done), daemon=True
            ),
            threading.Thread(target=signups, args=(state, base, args.signup_rate), daemon=True),
            threading.Thread(target=confirmations, args=(state, confirm_done), daemon=True),
            threading.Thread(
                target=unsubscribes, args=(state, args.unsubscribe_every), daemon=True
            ),
            threading.Thread(target=sends, args=(state, base, token, args.drain), daemon=True),
            threading.Thread(
                target=faults,
                args=(state, ctx, args.fault_every, args.down, args.relay_down),
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        t0 = time.time()
        time.sleep(args.minutes * 60)
        state.stop.set()
        threads[5].join()  # the fault in progress ends with the part back up
        print(
            f"load stopped after {time.time() - t0:.0f}s; "
            "letting the last send and confirmations finish",
            flush=True,
        )
        threads[4].join(args.drain)
        deadline = time.time() + args.drain
        while time.time() < deadline:
            with state.lock:
                if state.accepted <= state.confirmed:
                    break
            time.sleep(1)
        time.sleep(5)  # the capture's last lines
        tail_done.set()
        threads[0].join(10)
        confirm_done.set()
        import httpx

        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
            statuses = {
                u: wait_sent(state, client, base, u, time.time() + 60) for u in state.updates
            }
        copies = sum(len(c) for c in state.copies.values())
        print(
            f"\nfigures after {(time.time() - t0) / 60:.1f} min: {len(state.updates)} sends, "
            f"{copies:,} update copies captured, faults: "
            f"{dict(collections.Counter(k for k, _, _ in state.windows))}"
        )
        ok = check(state, db_url, statuses, grace=10)
        exits = collections.Counter(name for _, name, _ in state.exits)
        print(
            f"  [note] processes that exited by themselves (started again, as compose's restart "
            f"policy would): {dict(exits) or 0}"
        )
    finally:
        supervised.set()
        time.sleep(1.5)
        stop_groups([*procs, *ctx.get("workers", [])])
        if "relay" in ctx:
            stop_groups([ctx["relay"]])
        if "redis" in ctx:
            ctx["redis"].stop()
        if "pg" in ctx:
            ctx["pg"].destroy()
        print(f"(logs kept in {logs})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
