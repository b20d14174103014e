"""Timings of the service's pages and requests on the data set of years (bench/scale_build.py).

    .venv/bin/python bench/scale_build.py     # once: the database bench_scale
    .venv/bin/python bench/scale.py --broker redis://127.0.0.1:6380/12 \\
        --redis redis://127.0.0.1:6380/13

Starts `mailing serve` (MAILING_ENV=production, every other setting at its default but the
metrics token and a raised per-IP limit) on the built database, makes an admin API token, and
times each request: one warm-up, then the median of --repeat (default 5), from the client on
loopback (so an upper bound of the server's time), each against the issue's limit (300 ms for
a page or an API read, 50 ms for a resident's request). Requests that change state (sign-up,
one-click unsubscribe, erasure) act on a different subscriber each time. Prints a table and
exits 1 if any median is over its limit. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from throwaway import free_port, stop_groups  # noqa: E402

PAGE, RESIDENT = 300.0, 50.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bench_scale")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    url = sa.engine.make_url(args.server).set(database=args.database)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_ENV="production",
        MAILING_DATABASE_URL=url.render_as_string(hide_password=False),
        MAILING_BROKER_URL=args.broker,
        MAILING_REDIS_URL=args.redis,
        MAILING_SECRET_KEYS="bench-secret-key-0123456789-abcdefghijklmnop",
        MAILING_BASE_URL="https://updates.example.org",
        MAILING_METRICS_TOKEN="bench-metrics-token-0123456789",
        MAILING_RATE_LIMIT_PER_IP="1000000",
    )
    os.environ.update(env)

    import httpx

    from mailing.db import session_scope
    from mailing.models import Subscriber
    from mailing.staff import members, sessions
    from mailing.states import StaffRole
    from mailing.subscribers import links
    from mailing.subscribers.tokens import Purpose

    with session_scope() as session:
        admin_member, admin = members.create_staff(
            session, f"scale-{time.time_ns()}@staff.example.org", StaffRole.ADMIN
        )
        last_update = session.execute(
            sa.text("SELECT max(id) FROM theme_update WHERE status = 'sent'")
        ).scalar_one()
        from mailing import updates

        a_draft = updates.create_draft(
            session, None, "Scale draft", "Some **text**.", ["healthy-minds", "healthy-places"]
        ).id
        # Active subscribers with deliveries, a different one for each state-changing request.
        ids = list(
            session.execute(
                sa.text(
                    "SELECT s.id FROM subscriber s WHERE s.status = 'active' "
                    "AND EXISTS (SELECT 1 FROM delivery d WHERE d.subscriber_id = s.id) "
                    "ORDER BY s.id DESC LIMIT :n"
                ),
                {"n": 3 * (args.repeat + 1) + 1},
            ).scalars()
        )
        people = [session.get(Subscriber, i) for i in ids]

        def path(purpose: Purpose, who: Subscriber | None) -> str:
            assert who is not None
            return links.url_for(purpose, who).removeprefix("https://updates.example.org")

        reader = people[0]
        preferences = path(Purpose.MANAGE, reader)
        export = path(Purpose.EXPORT, reader)
        rest = people[1:]
        unsubscribes = [path(Purpose.UNSUBSCRIBE, p) for p in rest[: args.repeat + 1]]
        erasures = [path(Purpose.ERASE, p) for p in rest[args.repeat + 1 : 2 * args.repeat + 2]]
        # A console session as the sign-in leaves it (password and second factor given): the
        # pages are timed, not the sign-in.
        console = sessions.start_session(session, admin_member, with_factor=True)
        reader_email = reader.email if reader is not None else ""
        sent_update = last_update
        exported_rows = session.execute(
            sa.text("SELECT count(*) FROM delivery WHERE subscriber_id = :s"), {"s": ids[0]}
        ).scalar_one()

    # This checkout's code (PYTHONPATH), so a copy of bench/ in an older tree times that tree.
    server = subprocess.Popen(
        [sys.executable, "-m", "mailing.cli", "serve", "--port", str(port), "--workers", "2"],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    staff = {"Authorization": f"Bearer {admin}"}
    scrape = {"Authorization": f"Bearer {env['MAILING_METRICS_TOKEN']}"}
    # The session cookie is Secure in production: sent by hand, as a browser would over HTTPS.
    page = {"Cookie": f"admin_session={console}", "Accept": "text/html"}
    counter = iter(range(10**9))
    over = []
    try:
        client = httpx.Client(base_url=base, timeout=120)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        checks: list[tuple[str, float, object]] = [
            (
                f"GET /admin/updates/{last_update}",
                PAGE,
                ("GET", f"/admin/updates/{last_update}", staff),
            ),
            (
                f"GET /admin/updates/{a_draft} (a draft: who it would reach)",
                PAGE,
                ("GET", f"/admin/updates/{a_draft}", staff),
            ),
            ("GET /admin/stats", PAGE, ("GET", "/admin/stats", staff)),
            (
                "GET /admin/subscribers?email= (the desk's look-up)",
                PAGE,
                ("GET", f"/admin/subscribers?email={reader_email}", staff),
            ),
            ("console: the drafts list /admin", PAGE, ("GET", "/admin", page)),
            ("console: compose", PAGE, ("GET", "/admin/compose", page)),
            ("console: a draft", PAGE, ("GET", f"/admin/drafts/{a_draft}", page)),
            ("console: a draft's send page", PAGE, ("GET", f"/admin/drafts/{a_draft}/send", page)),
            (
                "console: a sent update's progress",
                PAGE,
                ("GET", f"/admin/drafts/{sent_update}/progress", page),
            ),
            (
                "console: its progress.json",
                PAGE,
                ("GET", f"/admin/drafts/{sent_update}/progress.json", page),
            ),
            ("console: figures", PAGE, ("GET", "/admin/figures", page)),
            ("console: audit", PAGE, ("GET", "/admin/audit", page)),
            ("console: staff", PAGE, ("GET", "/admin/staff", page)),
            ("console: support desk", PAGE, ("GET", "/admin/subscribers", page)),
            ("console: storm", PAGE, ("GET", "/admin/storm", page)),
            ("console: import", PAGE, ("GET", "/admin/import", page)),
            ("console: weekly summary", PAGE, ("GET", "/admin/weekly-summary", page)),
            ("GET /metrics", PAGE, ("GET", "/metrics", scrape)),
            ("GET /readyz", PAGE, ("GET", "/readyz", {})),
            ("GET /updates (archive)", PAGE, ("GET", "/updates", {})),
            ("GET /updates.atom (feed)", PAGE, ("GET", "/updates.atom", {})),
            ("POST /subscriptions (sign-up)", RESIDENT, "signup"),
            ("GET /preferences/{token}", RESIDENT, ("GET", preferences, {})),
            (f"GET /my-data/{{token}} ({exported_rows} deliveries)", RESIDENT, ("GET", export, {})),
            ("POST /unsubscribe/{token} (one-click)", RESIDENT, iter(unsubscribes)),
            ("POST /erase/{token}", RESIDENT, iter(erasures)),
        ]
        print(f"{'request':56} {'median':>9} {'limit':>7}  verdict", flush=True)
        for name, limit, what in checks:
            times = []
            for attempt in range(args.repeat + 1):
                if what == "signup":
                    method, target, headers = "POST", "/subscriptions", {}
                    body: dict[str, object] | None = {
                        "email": f"scale-{time.time_ns()}-{next(counter)}@example.org",
                        "consent": True,
                        "themes": ["healthy-minds"],
                    }
                elif isinstance(what, tuple):
                    method, target, headers = what
                    body = None
                else:
                    method, target, headers = "POST", next(what), {}  # type: ignore[call-overload]
                    body = None
                t = time.perf_counter()
                if body is not None:
                    answer = client.post(target, json=body)
                elif method == "POST" and target.startswith("/unsubscribe"):
                    answer = client.post(target, content=b"List-Unsubscribe=One-Click")
                elif method == "POST":
                    answer = client.post(target)
                else:
                    answer = client.get(target, headers=headers)
                ms = (time.perf_counter() - t) * 1000
                if answer.status_code >= 400 or (
                    name.startswith("console") and answer.status_code != 200
                ):
                    print(f"{name}: {answer.status_code} {answer.text[:200]}", flush=True)
                    ms = float("inf")
                if attempt:  # the first is the warm-up
                    times.append(ms)
            median = statistics.median(times)
            verdict = "ok" if median <= limit else "OVER"
            if median > limit:
                over.append(name)
            print(f"{name:56} {median:8.1f}ms {limit:6.0f}ms  {verdict}", flush=True)
    finally:
        stop_groups([server])
    if over:
        print(f"over the limit: {', '.join(over)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
