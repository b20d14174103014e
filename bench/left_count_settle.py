"""What migration 0019's delivery trigger (the kept "left after this copy" count) costs a send.

    .venv/bin/python bench/left_count_settle.py [--rows 100000] [--rounds 2]

On a throwaway PostgreSQL database: 100,000 active subscribers and one update with a pending
delivery each; settles them pending -> sent in chunks of 50, each chunk one transaction with
the send's own statements (chunk_sql.MARK_SENT and ADD_COUNTS, synchronous_commit off), with
the trigger and with it disabled, alternately; then once more with 1 % of the recipients
unsubscribed before their copy was stamped (the case in which the trigger writes). Prints the
seconds and microseconds a chunk of each run. Not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from throwaway import drop_database, make_database  # noqa: E402

CHUNK = 50
TRIGGER = "left_count_delivery_update"


def _build(engine: sa.Engine, rows: int) -> int:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subscriber (email, email_key, status, token_version, created_at, "
                "updated_at, confirmed_at, frequency) SELECT 'b' || i || '@example.net', "
                "'b' || i || '@example.net', 'active', 1, now(), now(), now(), 'immediate' "
                "FROM generate_series(1, :n) i"
            ),
            {"n": rows},
        )
        update_id = conn.execute(
            sa.text(
                "INSERT INTO theme_update (subject, body, themes, status, created_at, updated_at,"
                " recipients, sent, failed, published) VALUES ('bench', 'x', 'healthy-minds', "
                "'sending', now(), now(), :n, 0, 0, true) RETURNING id"
            ),
            {"n": rows},
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO delivery (update_id, subscriber_id, status, attempts) "
                "SELECT :u, id, 'pending', 0 FROM subscriber"
            ),
            {"u": update_id},
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
    return int(update_id)


def _settle(engine: sa.Engine, update_id: int) -> float:
    from mailing.models import utcnow
    from mailing.sending.chunk_sql import ADD_COUNTS, MARK_SENT, SYNC_COMMIT_OFF

    with engine.connect() as conn:
        ids = [
            int(i)
            for i in conn.execute(
                sa.text("SELECT id FROM delivery WHERE update_id = :u ORDER BY id"),
                {"u": update_id},
            ).scalars()
        ]
    began = time.perf_counter()
    with engine.connect() as conn:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            with conn.begin():
                conn.execute(SYNC_COMMIT_OFF)
                now = utcnow()
                conn.execute(MARK_SENT[True], {"chunk_ids": chunk, "settled_at": now})
                conn.execute(
                    ADD_COUNTS,
                    {
                        "the_update": update_id,
                        "sent_now": len(chunk),
                        "failed_now": 0,
                        "settled_at": now,
                    },
                )
    return time.perf_counter() - began


def _reset(engine: sa.Engine, update_id: int, trigger: bool) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE delivery SET status = 'pending', sent_at = NULL WHERE update_id = :u"),
            {"u": update_id},
        )
        conn.execute(
            sa.text(f"ALTER TABLE delivery {'ENABLE' if trigger else 'DISABLE'} TRIGGER {TRIGGER}")
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            sa.text("VACUUM ANALYZE delivery")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from mailing import migrate

    url, name = make_database(args.server)
    try:
        migrate.upgrade(url)
        engine = sa.create_engine(url)
        update_id = _build(engine, args.rows)
        chunks = -(-args.rows // CHUNK)
        for _ in range(args.rounds):
            for trigger in (False, True):
                _reset(engine, update_id, trigger)
                took = _settle(engine, update_id)
                label = "with the trigger" if trigger else "without it     "
                print(f"{label}: {took:6.2f} s, {took / chunks * 1e6:6.0f} us a chunk")
        _reset(engine, update_id, True)
        with engine.begin() as conn:  # 1 % left, stamped long before any copy goes
            conn.execute(
                sa.text(
                    "UPDATE subscriber SET status = 'unsubscribed', unsubscribed_at = now() + "
                    "interval '1 day' WHERE id % 100 = 0"
                )
            )
        took = _settle(engine, update_id)
        print(f"with it, 1 % unsubscribed: {took:6.2f} s, {took / chunks * 1e6:6.0f} us a chunk")
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT sum(n) FROM update_left_count")).scalar()
        print(f"kept figure: {kept} (expected {args.rows // 100})")
        engine.dispose()
    finally:
        drop_database(args.server, name)


if __name__ == "__main__":
    main()
