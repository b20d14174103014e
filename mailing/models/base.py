"""What every table module shares: the UTC clock and how an enum is stored."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(cls: type[StrEnum], length: int = 16) -> sa.Enum:
    # Stored as plain VARCHAR: no database enum types to migrate.
    return sa.Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda e: [m.value for m in e],
    )
