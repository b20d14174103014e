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

from mailing.models import Update, table_of
from mailing.sending.recipients import DELIVERY, SUBSCRIBER
from mailing.states import DeliveryStatus, DeliveryTransitions, transition_statement

UPDATE = table_of(Update)

# Parameter names differ from every column name of the tables these statements write.
THE_UPDATE = sa.bindparam("the_update", type_=sa.Integer)
DUE_AT = sa.bindparam("due_at", type_=DELIVERY.c.retry_at.type)
CHUNK_SIZE = sa.bindparam("chunk_size", type_=sa.Integer)
SETTLED_AT = sa.bindparam("settled_at", type_=DELIVERY.c.sent_at.type)

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
_CLAIMED = COLUMNS.where(CLAIMABLE).order_by(*ORDER).limit(CHUNK_SIZE)
CLAIM = {True: _CLAIMED.with_for_update(of=DELIVERY, skip_locked=True), False: _CLAIMED}
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
# The counts, and the heartbeat that tells the reconciler this send is alive.
ADD_COUNTS = (
    sa.update(UPDATE)
    .where(UPDATE.c.id == THE_UPDATE)
    .values(
        sent=UPDATE.c.sent + sa.bindparam("sent_now", type_=sa.Integer),
        failed=UPDATE.c.failed + sa.bindparam("failed_now", type_=sa.Integer),
        heartbeat_at=SETTLED_AT,
    )
)

# The chunk's "sent" marks need not wait for a disk flush (4 ms a commit here): a worker crash
# still loses the whole transaction, and a database crash can lose only the last fraction of a
# second of marks, which means sending those again, never losing them.
SYNC_COMMIT_OFF = sa.text("SET LOCAL synchronous_commit = off")
