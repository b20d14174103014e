"""From "send" to the first email, on a large list (issue 23: within 2 s, whatever its size).

    .venv/bin/python bench/scale_build.py          # once: the data set of years, bench_scale
    .venv/bin/python bench/first_email.py --latency 20 \\
        --broker redis://127.0.0.1:6380/12 --redis redis://127.0.0.1:6380/13

On an existing database (default bench_scale, migrated first), with the relay of
bench/relay.py answering each line --latency ms late and plain `mailing worker` on production
defaults, makes a draft to every theme (the largest send the list allows) and times, --repeat
times: the start of the send as `POST /admin/updates/{id}/send` does it (`request_send`: the
status change, the first page of delivery rows, the count, the commit, the hand-over to the
broker), then the first message the relay accepted. It prints each figure, the recipients and
how many delivery rows existed when the first message arrived (the rest were still being
written). Each send is then cancelled and its update and delivery rows deleted, so the data set
is left as it was. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from relay import start_relay  # noqa: E402
from send import clear_broker, start_default_worker  # noqa: E402
from throwaway import free_port, stop_groups  # noqa: E402

THEMES = [
    "healthy-children",
    "healthy-minds",
    "healthy-places",
    "healthy-communities",
    "healthy-living",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bench_scale")
    parser.add_argument("--latency", type=float, default=20.0, help="ms the relay answers late")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/6")
    args = parser.parse_args()

    db_url = args.server.rsplit("/", 1)[0] + "/" + args.database
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_ENV="production",  # every other setting at its default
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
    relay, count, _last = start_relay(port, args.latency)
    worker = start_default_worker(env)
    try:
        from mailing import sending, updates
        from mailing.db import get_engine, session_scope
        from workers.celery_app import configure
        from workers.enqueue import publish_update_batches

        configure()
        answers, firsts = [], []
        for attempt in range(args.repeat):
            with session_scope() as session:
                update = updates.create_draft(
                    session, None, f"First-email benchmark {attempt}", "Some words.", THEMES
                )
                update_id = update.id
            assert update_id is not None
            before = count.value
            t0 = time.perf_counter()
            with session_scope() as session:
                started = sending.request_send(session, update_id, None, publish_update_batches)
            answered = time.perf_counter() - t0
            while count.value == before:
                time.sleep(0.001)
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("no email in 120 s")
            first = time.perf_counter() - t0
            with get_engine().connect() as conn:
                written = conn.execute(
                    sa.text("SELECT count(*) FROM delivery WHERE update_id = :u"), {"u": update_id}
                ).scalar_one()
            with session_scope() as session:
                sending.cancel(session, update_id, None)
            answers.append(answered)
            firsts.append(first)
            print(
                f"send {attempt + 1}: {started.recipients:,} recipients; answered in "
                f"{answered * 1000:.0f} ms; first email after {first * 1000:.0f} ms "
                f"({written:,} delivery rows written by then)",
                flush=True,
            )
            time.sleep(3)  # the lanes holding a chunk settle it before the rows go
            with get_engine().begin() as conn:
                conn.execute(sa.text("DELETE FROM delivery WHERE update_id = :u"), {"u": update_id})
                conn.execute(
                    sa.text("DELETE FROM audit_log WHERE update_id = :u"), {"u": update_id}
                )
                conn.execute(sa.text("DELETE FROM theme_update WHERE id = :u"), {"u": update_id})
        print(
            f"median: answered in {statistics.median(answers) * 1000:.0f} ms, first email after "
            f"{statistics.median(firsts) * 1000:.0f} ms (limit 2,000 ms), relay {args.latency:g} ms"
        )
        sys.exit(0 if statistics.median(firsts) < 2.0 else 1)
    finally:
        stop_groups([worker])
        relay.terminate()


if __name__ == "__main__":
    main()
