"""Tables the service keeps for itself: beat leases (0013), the kept counts (0014, 0019, 0018) and
the delivery rows a send still has to write (0017)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailing.models.base import _enum, utcnow
from mailing.states import DeliveryStatus, SubscriberStatus

# ---------------------------------------------------------------------------------------------
# Reliability (migration 0013)


class BeatLease(SQLModel, table=True):
    """The last period a beat claimed a housekeeping job for: whichever beat moves it on runs
    the job, so any number of beats run each job once per period (workers/beat_lease.py)."""

    __tablename__ = "beat_lease"

    job: str = Field(primary_key=True, max_length=60)
    period: int = Field(sa_type=sa.BigInteger)
    holder: str = Field(max_length=120)  # host and process id of the beat that claimed it
    claimed_at: datetime = Field(default_factory=utcnow)


class DeliveryCount(SQLModel, table=True):
    """An update's deliveries by status, kept by the database as delivery rows are written,
    change status or are deleted (triggers, migrations 0014 and 0020): what progress reads, not
    a COUNT; summed over `shard` (PostgreSQL: each connection settling chunks writes its own)."""

    __tablename__ = "delivery_count"

    update_id: int = Field(foreign_key="theme_update.id", primary_key=True, ondelete="CASCADE")
    status: DeliveryStatus = Field(primary_key=True, sa_type=_enum(DeliveryStatus))
    shard: int = Field(default=0, primary_key=True)
    n: int = Field(default=0, sa_type=sa.BigInteger)


class SubscriberCount(SQLModel, table=True):
    """Subscribers by status (theme "") and by theme and status, kept by the database
    (triggers, migration 0014); summed over `shard` (PostgreSQL spreads concurrent writers)."""

    __tablename__ = "subscriber_count"

    theme: str = Field(primary_key=True, max_length=40)
    status: SubscriberStatus = Field(primary_key=True, sa_type=_enum(SubscriberStatus))
    shard: int = Field(default=0, primary_key=True)
    n: int = Field(default=0, sa_type=sa.BigInteger)


class UpdateLeftCount(SQLModel, table=True):
    """Who left after an update's copy reached them: its `sent` deliveries whose subscriber is
    now unsubscribed, unsubscribed_at >= the delivery's sent_at. Kept by the database (triggers,
    migration 0019) and summed over `shard` (PostgreSQL: -1 the delivery side, 0-15 the
    connections unsubscribing); what the update's page reads, not a join."""

    __tablename__ = "update_left_count"

    update_id: int = Field(foreign_key="theme_update.id", primary_key=True, ondelete="CASCADE")
    shard: int = Field(default=0, primary_key=True)
    n: int = Field(default=0, sa_type=sa.BigInteger)


class UpdatePopulation(SQLModel, table=True):
    """A send whose delivery rows the workers are still writing (mailing/sending/population.py):
    the last subscriber id written, and when the worker writing them last renewed its lease. No
    row: every delivery row is written. Kept apart from the update's row, which every settled
    chunk locks, so writing a page never waits for a chunk nor a chunk for a page."""

    __tablename__ = "update_population"

    update_id: int = Field(foreign_key="theme_update.id", primary_key=True, ondelete="CASCADE")
    after: int = Field(sa_type=sa.BigInteger)
    lease_at: datetime | None = None


class ThemeBit(SQLModel, table=True):
    """Each theme's bit in reach_count's sets (filled by migration 0018, which a new theme's
    migration extends: `tests/figures/test_reach_counts.py` checks every theme has one). Not
    data the service writes: the tests' wipe of the tables leaves it (FIXED_TABLES)."""

    __tablename__ = "theme_bit"

    theme: str = Field(primary_key=True, max_length=40)
    bit: int


class ReachCount(SQLModel, table=True):
    """How many subscribers an update reaches, by the set of themes they chose: active
    subscribers on `frequency` whose chosen themes are exactly `bits` (theme_bit's bits; 0:
    none). Kept by the database (triggers, migration 0018) and summed over `shard`
    (PostgreSQL spreads concurrent writers); an update's recipients are the sum over the sets
    that meet its themes (`figures.kept_counts.reach`), not a join."""

    __tablename__ = "reach_count"

    bits: int = Field(primary_key=True)
    frequency: str = Field(primary_key=True, max_length=16)
    shard: int = Field(default=0, primary_key=True)
    n: int = Field(default=0, sa_type=sa.BigInteger)


# Tables a migration fills and nothing else writes: a wipe of the data leaves them.
FIXED_TABLES: tuple[str, ...] = ("theme_bit",)
