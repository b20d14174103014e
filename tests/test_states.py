"""The state machines enforce themselves: only mailing/states.py spells a status, only declared
transitions happen, and the database refuses a status it does not know."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailing.db import get_engine
from mailing.models import Subscriber, Update, table_of
from mailing.states import (
    STATUS_COLUMNS,
    DeliveryStatus,
    SubscriberStatus,
    UpdateStatus,
    UpdateTransitions,
    transition,
)

ROOT = Path(__file__).resolve().parents[1]
STATUS_VALUES = {s.value for enum in (SubscriberStatus, UpdateStatus, DeliveryStatus) for s in enum}
SQL_LITERAL = re.compile(r"'(" + "|".join(sorted(STATUS_VALUES)) + r")'")


def _code_files() -> list[Path]:
    files = [*ROOT.joinpath("mailing").rglob("*.py"), *ROOT.joinpath("workers").rglob("*.py")]
    return [
        f
        for f in files
        if f.name != "states.py" and "migrations" not in f.parts and f.name != "models.py"
    ]


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in SQL_LITERAL.finditer(node.value):
                found.append((node.lineno, f"SQL literal {match.group(0)}"))
        elif isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                if isinstance(side, ast.Constant) and side.value in STATUS_VALUES:
                    found.append((node.lineno, f"comparison with {side.value!r}"))
        elif (
            isinstance(node, ast.keyword)
            and node.arg == "status"
            and isinstance(node.value, ast.Constant)
            and node.value.value in STATUS_VALUES
        ):
            found.append((node.value.lineno, f"status={node.value.value!r}"))
    return found


def test_no_status_literal_outside_the_state_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _code_files()
        for line, what in _literals(ast.parse(path.read_text(), str(path)))
    ]
    assert offenders == [], "spell statuses through mailing/states.py:\n" + "\n".join(offenders)


def test_the_literal_check_would_catch_one() -> None:
    tree = ast.parse(
        "x = \"UPDATE delivery SET status = 'sent'\"\n"
        "if u.status == 'draft': pass\n"
        "f(status='active')"
    )
    assert [what for _, what in _literals(tree)] == [
        "SQL literal 'sent'",
        "comparison with 'draft'",
        "status='active'",
    ]


def test_the_database_refuses_a_status_it_does_not_know(session) -> None:
    """A misspelt status in raw SQL fails at once instead of being stored and never matched."""
    from mailing.models import Delivery, WeeklyDigest

    subscriber = Subscriber(email="check@example.org", email_key="check@example.org")
    update = Update(subject="s", body="b", themes="healthy-minds")
    session.add_all([subscriber, update])
    session.flush()
    delivery = Delivery(update_id=update.id, subscriber_id=subscriber.id)
    digest = WeeklyDigest(subscriber_id=subscriber.id, week="2026-11-28", update_ids="")
    session.add_all([delivery, digest])
    session.commit()
    rows = {
        "subscriber": subscriber.id,
        "theme_update": update.id,
        "delivery": delivery.id,
        "weekly_digest": digest.id,
    }
    assert {t for t, c in STATUS_COLUMNS if c == "status"} == set(rows)
    for table, row_id in rows.items():
        with get_engine().connect() as conn:
            with pytest.raises(sa.exc.IntegrityError):
                conn.execute(
                    sa.text(f"UPDATE {table} SET status = 'sendng' WHERE id = :i"),
                    {"i": row_id},
                )
            conn.rollback()
    # A known status is accepted (the constraint is not simply refusing everything).
    with get_engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE theme_update SET status = :s WHERE id = :i"),
            {"s": UpdateStatus.SCHEDULED.value, "i": update.id},
        )


def test_an_undeclared_transition_changes_nothing(session) -> None:
    update = Update(subject="s", body="b", themes="healthy-minds")
    session.add(update)
    session.commit()
    table = table_of(Update)
    # A draft cannot be paused or finished: the conditional UPDATE matches no row.
    for t in (UpdateTransitions.PAUSE, UpdateTransitions.FINISH, UpdateTransitions.RESUME):
        assert transition(session, table, t, table.c.id == update.id) == 0
    session.refresh(update)
    assert update.status == UpdateStatus.DRAFT
    assert transition(session, table, UpdateTransitions.SCHEDULE, table.c.id == update.id) == 1
    # Two callers racing for the same change: the second finds nothing to change.
    assert transition(session, table, UpdateTransitions.SCHEDULE, table.c.id == update.id) == 0
    session.rollback()


def test_no_code_sets_a_status_by_hand() -> None:
    """Every change of status is a named transition (one conditional UPDATE): no ORM object's
    status is assigned anywhere in the code."""
    assignment = re.compile(r"\b(?!self\b)\w+\.status\s*=(?!=)")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for top in ("mailing", "workers")
        for path in ROOT.joinpath(top).rglob("*.py")
        if "migrations" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if assignment.search(line) and "status = :" not in line
    ]
    assert found == []
    assert table_of(Subscriber).name == "subscriber"
