"""The statements a send runs for every commit chunk, built once with bound parameters.

A chunk is 50 emails and a 100,000-recipient send runs 2,000 of them: building each statement
anew (its clauses, their cache key) was about half the CPU the status check, the claim and the
settle cost a worker. Each is built here once per dialect (True: PostgreSQL) and executed with
the chunk's values as parameters; what they say is unchanged (worker CPU an email 86-97 µs
before, 69-73 µs after, bench/send.py back to back).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from mailing.models import DeliveryCount, Update, table_of
from mailing.sending.recipients import DELIVERY, SUBSCRIBER
from mailing.states import (
    DELIVERED,
    DeliveryStatus,
    DeliveryTransitions,
    UpdateStatus,
    transition_statement,
)

UPDATE = table_of(Update)
DELIVERY_COUNT = table_of(DeliveryCount)

# Parameter names differ from every column name of the tables these statements write.
THE_UPDATE = sa.bindparam("the_update", type_=sa.Integer)
DUE_AT = sa.bindparam("due_at", type_=DELIVERY.c.retry_at.type)
CHUNK_SIZE = sa.bindparam("chunk_size", type_=sa.Integer)
SETTLED_AT = sa.bindparam("settled_at", type_=DELIVERY.c.sent_at.type)
AFTER_ID = sa.bindparam("after_id", type_=sa.Integer)

STATUS = sa.select(UPDATE.c.status).where(UPDATE.c.id == THE_UPDATE)

COLUMNS = sa.select(
    DELIVERY.c.id,
    DELIVERY.c.subscriber_id,
    SUBSCRIBER.c.status,
    SUBSCRIBER.c.email,
    SUBSCRIBER.c.email_key,
    SUBSCRIBER.c.token_version,
    DELIVERY.c.attempts,
).join_from(DELIVERY, SUBSCRIBER, SUBSCRIBER.c.id == DELIVERY.c.subscriber_id)

# The shape pins the plan to ix_delivery_pending (an update's pending rows in id order), which
# reads one chunk's rows however far the send has gone. With `update_id = x` the planner treats
# update_id as a constant, so the primary key also gives "id order" and, with no statistics yet
# for the rows start_send just wrote, it walks the primary key past every row already sent (half
# the database CPU of a 100k send). A range on update_id is not an equality, so only the partial
# index yields (update_id, id) order without a sort; the status is written into the SQL so that
# even a prepared (generic) plan can prove the index's predicate. tests/sending/test_send_plan.py
# reads the plan.
CLAIMABLE = sa.and_(
    DELIVERY.c.update_id >= THE_UPDATE,
    DELIVERY.c.update_id <= THE_UPDATE,
    DELIVERY.c.status == sa.literal(DeliveryStatus.PENDING.value, literal_execute=True),
    sa.or_(DELIVERY.c.retry_at.is_(None), DELIVERY.c.retry_at <= DUE_AT),
)
ORDER = (DELIVERY.c.update_id, DELIVERY.c.id)
CLAIM_SQLITE = COLUMNS.where(CLAIMABLE).order_by(*ORDER).limit(CHUNK_SIZE)

# PostgreSQL: the claim in one statement (a chunk's round trips to the database were most of
# the database's CPU in a send over many lanes). The pending rows are locked first, alone, and
# only the chunk's rows are joined to their subscribers: joining before the lock looked up the
# subscriber of every row another lane holds (800-2,400 rows a claim, 8-11 ms). `after_id` starts
# the scan past the rows this process claimed last (the lanes' frontier; 0: from the first), so
# a lane skips few rows the others hold. The update must still be `sending` (the pause/cancel
# check, in the same statement), and the chunk's commit need not wait for a disk flush (a worker
# crash still loses the whole transaction; a database crash can lose only the last fraction of
# a second of "sent" marks, which means sending those again, never losing them).
_SENDING = sa.exists().where(
    UPDATE.c.id == THE_UPDATE,
    UPDATE.c.status == sa.literal(UpdateStatus.SENDING.value, literal_execute=True),
)
_LOCKED = (
    sa.select(DELIVERY.c.id, DELIVERY.c.subscriber_id, DELIVERY.c.attempts)
    .where(CLAIMABLE, DELIVERY.c.id > AFTER_ID, _SENDING)
    .order_by(*ORDER)
    .limit(CHUNK_SIZE)
    .with_for_update(of=DELIVERY, skip_locked=True)
    .cte("locked")
)
_NO_FLUSH = sa.select(
    sa.func.set_config("synchronous_commit", "off", sa.true()).label("setting")
).cte("no_flush")
# Each claimed row's subscriber by its key (a LATERAL subquery with a LIMIT is never turned
# into a join the planner may run as a scan of the subscribers, as it did for a small list).
_WHOSE = (
    sa.select(
        SUBSCRIBER.c.status, SUBSCRIBER.c.email, SUBSCRIBER.c.email_key, SUBSCRIBER.c.token_version
    )
    .where(SUBSCRIBER.c.id == _LOCKED.c.subscriber_id)
    .limit(1)
    .lateral("whose")
)
CLAIM_POSTGRES = (
    sa.select(
        _LOCKED.c.id,
        _LOCKED.c.subscriber_id,
        _WHOSE.c.status,
        _WHOSE.c.email,
        _WHOSE.c.email_key,
        _WHOSE.c.token_version,
        _LOCKED.c.attempts,
    )
    .select_from(_LOCKED)
    .join(_WHOSE, sa.true())
    .where(sa.exists(sa.select(_NO_FLUSH.c.setting)))
)
# SQLite has one writer: writing first takes the database's write lock, held until commit.
LOCK_CLAIMABLE = (
    sa.update(DELIVERY)
    .where(
        DELIVERY.c.id.in_(
            sa.select(DELIVERY.c.id)
            .where(CLAIMABLE)
            .order_by(*ORDER)
            .limit(CHUNK_SIZE)
            .scalar_subquery()
        )
    )
    .values(attempts=DELIVERY.c.attempts)
)

# Some of the chunk's deliveries (parameter `chunk_ids`), for every statement that settles them:
# one array parameter on PostgreSQL (no per-id bind parameter to build, expand and convert, and
# one statement text for any number), an expanding IN list on SQLite.
CHUNK_IDS = {
    True: DELIVERY.c.id == sa.any_(sa.bindparam("chunk_ids", type_=ARRAY(sa.Integer))),
    False: DELIVERY.c.id.in_(sa.bindparam("chunk_ids", expanding=True)),
}
MARK_SENT = {
    postgres: transition_statement(
        DELIVERY,
        DeliveryTransitions.SEND,
        CHUNK_IDS[postgres],
        {"sent_at": SETTLED_AT, "attempts": DELIVERY.c.attempts + 1},
    )
    for postgres in (True, False)
}
# The heartbeat that tells the reconciler this send is alive (written at most every
# HEARTBEAT_SECONDS by a task's lanes: the update's row is no longer written by every chunk).
HEARTBEAT = sa.update(UPDATE).where(UPDATE.c.id == THE_UPDATE).values(heartbeat_at=SETTLED_AT)
HEARTBEAT_SECONDS = 1.0


def _summed(*statuses: DeliveryStatus) -> sa.ScalarSelect[int]:
    """The update's deliveries in these statuses, from the kept counts (a few rows a shard)."""
    counts = DELIVERY_COUNT
    which = sa.or_(
        *(counts.c.status == sa.literal(s.value, literal_execute=True) for s in statuses)
    )
    return (
        sa.select(sa.func.coalesce(sa.func.sum(counts.c.n), 0))
        .where(counts.c.update_id == THE_UPDATE, which)
        .scalar_subquery()
    )


# PostgreSQL: the chunk's "sent" marks in one statement that answers the send guard's figures as
# they stand after it (status; copies the relay took, failed, bounced), so the guard needs no
# transaction of its own for a chunk that changes nothing for it. The kept counts it reads are
# those before the statement (its trigger runs at its end): the marked rows are added.
_SENT = MARK_SENT[True].returning(DELIVERY.c.id).cte("marked")
SETTLE_POSTGRES = sa.select(
    UPDATE.c.status,
    _summed(*sorted(DELIVERED)) + sa.select(sa.func.count()).select_from(_SENT).scalar_subquery(),
    _summed(DeliveryStatus.FAILED),
    _summed(DeliveryStatus.BOUNCED),
).where(UPDATE.c.id == THE_UPDATE)
