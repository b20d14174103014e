"""What migration 0018 (the kept count of who an update would reach) saves a page and costs a write.

    .venv/bin/python bench/reach_count.py [--rows 200000] [--rounds 2]

On a throwaway PostgreSQL database: 200,000 subscribers written with plain bulk SQL (85 %
active, 5 % pending, 10 % unsubscribed; a fifth of them weekly; each with one to five of the
five themes, a few with none). Then:

- `count_recipients` for a few sets of themes, the join it replaced (inlined here) against the
  kept count (`sending.count_recipients` now), median of 5 after a warm-up, and a check that
  both give the same number;
- the cost of the triggers to a write, with 0018's triggers and with them disabled (`ALTER
  TABLE ... DISABLE TRIGGER`, its own six only), alternately: 200 sign-up-sized batches (16
  subscribers and their themes, one transaction each; pending as a sign-up writes them, and
  active as an import does), and 1,000 single-row theme changes (one transaction each,
  adding or removing one theme of an active subscriber).

Prints the times and their ratios. Not a test.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from throwaway import drop_database, make_database  # noqa: E402

THEMES = (
    "healthy-children",
    "healthy-minds",
    "healthy-places",
    "healthy-communities",
    "healthy-living",
)
SETS: list[tuple[str, ...]] = [THEMES, ("healthy-minds",), ("healthy-places", "healthy-living")]
TRIGGERS = {
    "reach_count_subscriber_insert": "subscriber",
    "reach_count_subscriber_update": "subscriber",
    "reach_count_subscriber_delete": "subscriber",
    "reach_count_theme_insert": "subscriber_theme",
    "reach_count_theme_update": "subscriber_theme",
    "reach_count_theme_delete": "subscriber_theme",
}
# The count as sending/recipients.py made it before 0018.
OLD_JOIN = sa.text(
    "SELECT count(*) FROM subscriber s WHERE s.status = 'active' AND s.frequency = 'immediate' "
    "AND EXISTS (SELECT 1 FROM subscriber_theme t WHERE t.subscriber_id = s.id "
    "AND t.theme IN :themes)"
).bindparams(sa.bindparam("themes", expanding=True))
BATCH, BATCHES, CHANGES = 16, 200, 1000


def _build(engine: sa.Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subscriber (email, email_key, status, token_version, created_at, "
                "updated_at, confirmed_at, frequency) SELECT 'r' || i || '@example.net', "
                "'r' || i || '@example.net', CASE WHEN i % 20 = 0 THEN 'pending' "
                "WHEN i % 10 = 1 THEN 'unsubscribed' ELSE 'active' END, 1, now(), now(), now(), "
                "CASE WHEN i % 5 = 2 THEN 'weekly' ELSE 'immediate' END "
                "FROM generate_series(1, :n) i"
            ),
            {"n": rows},
        )
        # Theme k of subscriber i if bit k of a hash of i is set: 1 to 5 themes, some none.
        conn.execute(
            sa.text(
                "INSERT INTO subscriber_theme (subscriber_id, theme) "
                "SELECT s.id, t.theme FROM subscriber s "
                "CROSS JOIN (VALUES (0, 'healthy-children'), (1, 'healthy-minds'), "
                "(2, 'healthy-places'), (3, 'healthy-communities'), (4, 'healthy-living')) "
                "t(k, theme) WHERE ((s.id * 2654435761::bigint) % 31 + 1) & (1 << t.k) <> 0 "
                "AND s.id % 97 <> 0"
            )
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))


def _median_ms(run: Callable[[], object], times: int = 5) -> float:
    run()  # warm-up
    took = []
    for _ in range(times):
        began = time.perf_counter()
        run()
        took.append(time.perf_counter() - began)
    return statistics.median(took) * 1000


def _counts(engine: sa.Engine) -> None:
    from sqlmodel import Session

    from mailing.sending import count_recipients

    print("count_recipients (median of 5)    old join   kept count   ratio")
    with Session(engine) as session:
        for themes in SETS:
            old = int(session.execute(OLD_JOIN, {"themes": list(themes)}).scalar_one())
            kept = count_recipients(session, themes)
            assert old == kept, (themes, old, kept)
            chosen = list(themes)
            join_ms = _median_ms(lambda c=chosen: session.execute(OLD_JOIN, {"themes": c}).all())
            kept_ms = _median_ms(lambda c=chosen: count_recipients(session, c))
            label = "all five" if themes == THEMES else ", ".join(themes)
            print(
                f"  {label:32} {join_ms:8.1f} ms {kept_ms:8.2f} ms {join_ms / kept_ms:8.0f}x"
                f"   ({kept:,} recipients)"
            )


def _triggers(engine: sa.Engine, on: bool) -> None:
    with engine.begin() as conn:
        for name, table in TRIGGERS.items():
            conn.execute(
                sa.text(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER {name}")
            )


def _batches(engine: sa.Engine, status: str, tag: str) -> float:
    """BATCHES transactions of BATCH subscribers with two or three themes each."""
    rng = random.Random(7)
    insert = sa.text(
        "INSERT INTO subscriber (email, email_key, status, token_version, created_at, updated_at,"
        " frequency) SELECT e, e, :status, 1, now(), now(), 'immediate' FROM unnest(CAST(:emails "
        "AS text[])) e RETURNING id"
    )
    themes = sa.text(
        "INSERT INTO subscriber_theme (subscriber_id, theme) SELECT * FROM "
        "unnest(CAST(:ids AS integer[]), CAST(:themes AS text[]))"
    )
    began = time.perf_counter()
    with engine.connect() as conn:
        for b in range(BATCHES):
            emails = [f"{tag}{b}x{i}@example.net" for i in range(BATCH)]
            with conn.begin():
                ids = list(conn.execute(insert, {"status": status, "emails": emails}).scalars())
                pairs = [(i, t) for i in ids for t in rng.sample(THEMES, rng.randint(2, 3))]
                conn.execute(
                    themes, {"ids": [p[0] for p in pairs], "themes": [p[1] for p in pairs]}
                )
    return time.perf_counter() - began


def _changes(engine: sa.Engine, seed: int) -> float:
    """CHANGES transactions, each adding or removing one theme of an active subscriber."""
    rng = random.Random(seed)
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                sa.text("SELECT id FROM subscriber WHERE status = 'active' ORDER BY id LIMIT 50000")
            ).scalars()
        )
    add = sa.text(
        "INSERT INTO subscriber_theme (subscriber_id, theme) VALUES (:s, :t) ON CONFLICT DO NOTHING"
    )
    drop = sa.text("DELETE FROM subscriber_theme WHERE subscriber_id = :s AND theme = :t")
    began = time.perf_counter()
    with engine.connect() as conn:
        for _ in range(CHANGES):
            with conn.begin():
                values = {"s": rng.choice(ids), "t": rng.choice(THEMES)}
                conn.execute(add if rng.random() < 0.5 else drop, values)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from mailing import migrate

    url, name = make_database(args.server)
    try:
        migrate.upgrade(url)
        engine = sa.create_engine(url)
        began = time.perf_counter()
        _build(engine, args.rows)
        print(f"built {args.rows:,} subscribers in {time.perf_counter() - began:.1f} s")
        _counts(engine)
        print("writes (one transaction each)              without     with   ratio")
        for round_ in range(args.rounds):
            for what, run in (
                (f"{BATCHES} sign-up batches of {BATCH} (pending)", "pending"),
                (f"{BATCHES} import batches of {BATCH} (active)", "active"),
                (f"{CHANGES} single-row theme changes", None),
            ):
                took = {}
                for on in (False, True):
                    _triggers(engine, on)
                    tag = f"{run}{round_}{'y' if on else 'n'}"
                    took[on] = (
                        _batches(engine, run, tag) if run else _changes(engine, round_ * 2 + on)
                    )
                n = BATCHES if run else CHANGES
                each = {k: v / n * 1e6 for k, v in took.items()}
                print(
                    f"  {what:40} {each[False]:6.0f} us {each[True]:6.0f} us "
                    f"{took[True] / took[False]:6.2f}   (a batch or change; round {round_ + 1})"
                )
        engine.dispose()
    finally:
        drop_database(args.server, name)


if __name__ == "__main__":
    main()
