"""notice kinds for bringing a list in and refreshing consent: `repermission` (an imported
address without evidence of consent is asked once) and `consent_refresh` (consent older than
MAILING_CONSENT_REFRESH_YEARS is asked to be renewed). The ledger's new event kinds (imported,
refresh-asked, renewed, lapsed) need no change: consent_event.kind has no CHECK constraint.

On SQLite a CHECK constraint changes only by rebuilding the table (Alembic's batch mode, from
the reflected table, its rows copied).

Revision ID: 0015
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not change when the code does later).
OLD_KINDS = (
    "confirm",
    "already_subscribed",
    "erase_link",
    "export_link",
    "welcome",
    "sign_in_failures",
)
NEW_KINDS = (*OLD_KINDS, "repermission", "consent_refresh")
NAME = "ck_notice_kind"


def _condition(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def _change(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    # On SQLite the batch rebuilds the table from its reflected definition (every column that
    # earlier revisions added), swapping only the constraint.
    with op.batch_alter_table("notice") as batch:
        batch.drop_constraint(NAME, type_="check")
        batch.create_check_constraint(NAME, _condition(new))


def upgrade() -> None:
    _change(OLD_KINDS, NEW_KINDS)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM notice WHERE kind IN ('repermission', 'consent_refresh')"))
    _change(NEW_KINDS, OLD_KINDS)
