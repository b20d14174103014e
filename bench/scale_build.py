"""Builds the data set of years that bench/scale.py times the service against (issue 23).

    .venv/bin/python bench/scale_build.py            # 1,000,000 subscribers, 150 updates, 30M rows
    .venv/bin/python bench/scale_build.py --subscribers 20000 --updates 5 --database bench_small

Into a PostgreSQL database `bench_scale` (dropped and made again, migrated to the head):
1,000,000 subscribers (85 % active, 5 % each pending, unsubscribed and bounced; 15 % weekly;
one to three of the five themes each), three consent events each (requested, confirmed,
changed), and 150 sent updates spread over three years, each to a fifth of the subscribers
(200,000 delivery rows each, 30 million in all: 98 % sent, 1 % cancelled, 0.5 % failed, 0.3 %
bounced, 0.2 % complained). Everything is written by INSERT ... SELECT over generate_series,
in the server, a statement per update so the progress shows; foreign keys and triggers are
off while loading (session_replication_role = replica), the delivery table's non-unique
indexes are built after its rows, and the kept counts (migration 0014) are then filled from
the rows, as the migration does. Prints the time of each step and the bytes on disk.
Not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THEMES = [
    "healthy-children",
    "healthy-minds",
    "healthy-places",
    "healthy-communities",
    "healthy-living",
]


def _migration(name: str) -> Any:
    path = ROOT / "mailing/migrations/versions" / name
    spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fill_statements() -> list[str]:
    """The kept counts' fills, as their migrations run them: 0014 (deliveries by status, the
    subscriber counts), 0019 (who left after each update), 0018 (who an update would reach)."""
    fill = _migration("0014_kept_counts.py").FILL
    # Since 0020 delivery_count has a shard column: the fill writes shard 0.
    old = "INSERT INTO delivery_count (update_id, status, n) SELECT update_id, status, count(*)"
    new = (
        "INSERT INTO delivery_count (update_id, status, shard, n) "
        "SELECT update_id, status, 0, count(*)"
    )
    assert any(old in statement for statement in fill)
    return [statement.replace(old, new) for statement in fill] + [
        _migration("0019_left_after_counts.py").FILL,
        _migration("0018_reach_counts.py").FILL,
    ]


def step(conn: sa.Connection, what: str, sql: str, **params: object) -> None:
    t = time.time()
    conn.execute(sa.text(sql), params)
    print(f"{what}: {time.time() - t:.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bench_scale")
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--share", type=int, default=5, help="each update reaches 1/share")
    args = parser.parse_args()
    assert args.database.startswith("bench_")

    admin = sa.create_engine(args.server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{args.database}"'))
    admin.dispose()
    url = sa.engine.make_url(args.server).set(database=args.database)
    url_text = url.render_as_string(hide_password=False)

    from mailing import migrate

    migrate.upgrade(url_text)
    started = time.time()
    engine = sa.create_engine(url_text, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("SET session_replication_role = replica"))
        conn.execute(sa.text("SET synchronous_commit = off"))
        conn.execute(sa.text("SET maintenance_work_mem = '512MB'"))
        n = args.subscribers
        themes = "ARRAY[" + ", ".join(f"'{t}'" for t in THEMES) + "]"
        step(
            conn,
            f"{n:,} subscribers",
            """
            INSERT INTO subscriber (id, email, email_key, status, token_version, created_at,
                updated_at, confirmed_at, unsubscribed_at, frequency)
            SELECT i, 'reader' || i || '@example.net', 'reader' || i || '@example.net',
                CASE WHEN i % 20 < 17 THEN 'active' WHEN i % 20 = 17 THEN 'pending'
                     WHEN i % 20 = 18 THEN 'unsubscribed' ELSE 'bounced' END,
                1, now() - interval '3 years' + (i % 1000) * interval '1 day',
                now() - (i % 500) * interval '1 hour',
                CASE WHEN i % 20 <> 17 THEN now() - interval '2 years' END,
                CASE WHEN i % 20 = 18 THEN now() - (i % 300) * interval '1 day' END,
                CASE WHEN i % 100 < 15 THEN 'weekly' ELSE 'immediate' END
            FROM generate_series(1, :n) AS i
            """,
            n=n,
        )
        conn.execute(sa.text("SELECT setval('subscriber_id_seq', :n)"), {"n": n})
        step(
            conn,
            "themes (1 to 3 each)",
            f"""
            INSERT INTO subscriber_theme (subscriber_id, theme)
            SELECT DISTINCT i, ({themes})[1 + (i * k * 7 + k) % 5]
            FROM generate_series(1, :n) AS i, generate_series(1, 1 + i % 3) AS k
            """,
            n=n,
        )
        step(
            conn,
            "consent events (3 each)",
            f"""
            INSERT INTO consent_event (subscriber_id, kind, occurred_at, channel, themes, frequency)
            SELECT i, (ARRAY['requested', 'confirmed', 'changed'])[k],
                now() - interval '3 years' + (i % 1000) * interval '1 day' + k * interval '1 hour',
                'form', ({themes})[1 + i % 5], 'immediate'
            FROM generate_series(1, :n) AS i, generate_series(1, 3) AS k
            """,
            n=n,
        )
        step(
            conn,
            f"{args.updates} sent updates",
            """
            INSERT INTO theme_update (id, subject, body, themes, status, created_at, updated_at,
                send_started_at, sent_at, recipients, sent, failed, published)
            SELECT u, 'Update ' || u, repeat('A paragraph about health in London. ', 40),
                'healthy-minds,healthy-places', 'sent', t, t, t, t + interval '20 minutes',
                0, 0, 0, true
            FROM generate_series(1, :u) AS u,
                LATERAL (SELECT now() - interval '3 years' + u * interval '7 days' AS t) AS w
            """,
            u=args.updates,
        )
        conn.execute(sa.text("SELECT setval('theme_update_id_seq', :u)"), {"u": args.updates})
        secondary = conn.execute(
            sa.text(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'delivery' "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
            )
        ).all()
        for name, _ in secondary:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        t = time.time()
        for u in range(1, args.updates + 1):
            conn.execute(
                sa.text(
                    """
                    INSERT INTO delivery (update_id, subscriber_id, status, attempts, enqueued_at,
                        sent_at, error)
                    SELECT :u, i,
                        CASE WHEN h < 980 THEN 'sent' WHEN h < 990 THEN 'cancelled'
                             WHEN h < 995 THEN 'failed' WHEN h < 998 THEN 'bounced'
                             ELSE 'complained' END,
                        1, w.t,
                        CASE WHEN h < 980 OR h >= 995
                             THEN w.t + (i % 1200) * interval '1 second' END,
                        CASE WHEN h >= 990 AND h < 995 THEN '550 5.1.1 refused' END
                    FROM generate_series(1 + :u % :share, :n, :share) AS i,
                        LATERAL (SELECT (i::bigint * 7919 + :u * 104729) % 1000 AS h) AS x,
                        (SELECT sent_at - interval '20 minutes' AS t
                         FROM theme_update WHERE id = :u) AS w
                    """
                ),
                {"u": u, "n": n, "share": args.share},
            )
            if u % 10 == 0 or u == args.updates:
                print(
                    f"deliveries: {u} of {args.updates} updates, {time.time() - t:.0f}s", flush=True
                )
        step(
            conn,
            "update counts",
            """
            UPDATE theme_update u SET recipients = d.total, sent = d.sent, failed = d.failed
            FROM (SELECT update_id, count(*) AS total,
                    count(*) FILTER (WHERE status IN ('sent', 'bounced', 'complained')) AS sent,
                    count(*) FILTER (WHERE status = 'failed') AS failed
                  FROM delivery GROUP BY update_id) d
            WHERE d.update_id = u.id
            """,
        )
        for name, definition in secondary:
            step(conn, f"index {name}", definition)
        conn.execute(sa.text("SET session_replication_role = DEFAULT"))
        conn.execute(sa.text("DELETE FROM delivery_count"))
        conn.execute(sa.text("DELETE FROM subscriber_count"))
        conn.execute(sa.text("DELETE FROM update_left_count"))
        conn.execute(sa.text("DELETE FROM reach_count"))
        for statement in _fill_statements():
            step(conn, "kept counts", statement)
        step(conn, "vacuum analyze", "VACUUM ANALYZE")
        print(f"built in {time.time() - started:.0f}s", flush=True)
        for table in ("subscriber", "subscriber_theme", "consent_event", "delivery"):
            rows, total = conn.execute(
                sa.text(f"SELECT (SELECT count(*) FROM {table}), pg_total_relation_size('{table}')")
            ).one()
            size = f"{total / 2**20:,.0f} MiB, {total / max(rows, 1):.0f} bytes a row"
            print(f"{table}: {rows:,} rows, {size}", flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
