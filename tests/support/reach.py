"""The oracle of the kept reach counts (migration 0018: reach_count, theme_bit): the joins they
replaced, set by set and frequency by frequency, and `assert_exact`, which checks the kept count
against them for every set of themes (tests/figures/test_reach_counts.py, and the races on one
subscriber's themes in tests/subscribers/test_preferences_race.py)."""

from __future__ import annotations

import itertools

import sqlalchemy as sa

from mailing.db import get_engine, session_scope
from mailing.figures import subscribers
from mailing.figures.subscribers import Reach
from mailing.sending import count_recipients
from mailing.themes import ALL_THEMES

# Every theme alone, a few pairs, and all five.
THEME_SETS: list[tuple[str, ...]] = [
    *((t,) for t in ALL_THEMES),
    *itertools.islice(itertools.combinations(ALL_THEMES, 2), 0, None, 3),
    ALL_THEMES,
]
# The count as sending/recipients.py made it before 0018: the oracle.
ORACLE = """
    SELECT COUNT(*) FROM subscriber s
    WHERE s.status = 'active' AND s.frequency = 'immediate' AND EXISTS (
        SELECT 1 FROM subscriber_theme t WHERE t.subscriber_id = s.id AND t.theme IN :themes)"""
# Both frequencies, as figures/subscribers.py counted them before 0018 (the weekly ones get an
# update in the Saturday summary): the oracle of the compose, send and weekly-summary pages.
ORACLE_BY_FREQUENCY = """
    SELECT s.frequency, COUNT(*) FROM subscriber s
    WHERE s.status = 'active' AND EXISTS (
        SELECT 1 FROM subscriber_theme t WHERE t.subscriber_id = s.id AND t.theme IN :themes)
    GROUP BY s.frequency"""
# Who counts by their exact set of themes (spelt as the themes themselves) and frequency.
BY_SET = """
    SELECT s.id, s.frequency, t.theme FROM subscriber s
    LEFT JOIN subscriber_theme t ON t.subscriber_id = s.id
    WHERE s.status = 'active'"""


def theme_bits() -> dict[str, int]:
    with get_engine().connect() as conn:
        return {
            str(t): int(b) for t, b in conn.execute(sa.text("SELECT theme, bit FROM theme_bit"))
        }


def real_sets() -> dict[tuple[int, str], int]:
    bits = theme_bits()
    chosen: dict[int, int] = {}
    frequency_of: dict[int, str] = {}
    with get_engine().connect() as conn:
        for sid, frequency, theme in conn.execute(sa.text(BY_SET)):
            chosen[sid] = chosen.get(sid, 0) | (1 << bits[theme] if theme else 0)
            frequency_of[sid] = str(frequency)
    found: dict[tuple[int, str], int] = {}
    for sid, value in chosen.items():
        key = (value, frequency_of[sid])
        found[key] = found.get(key, 0) + 1
    return found


def kept_sets() -> dict[tuple[int, str], int]:
    with get_engine().connect() as conn:
        rows = conn.execute(
            sa.text("SELECT bits, frequency, SUM(n) FROM reach_count GROUP BY bits, frequency")
        )
        return {(int(b), str(f)): int(n) for b, f, n in rows if n}


def join(themes: tuple[str, ...]) -> int:
    query = sa.text(ORACLE).bindparams(sa.bindparam("themes", expanding=True))
    with get_engine().connect() as conn:
        return int(conn.execute(query, {"themes": list(themes)}).scalar_one())


def join_by_frequency(themes: tuple[str, ...]) -> Reach:
    query = sa.text(ORACLE_BY_FREQUENCY).bindparams(sa.bindparam("themes", expanding=True))
    with get_engine().connect() as conn:
        counts = {str(f): int(n) for f, n in conn.execute(query, {"themes": list(themes)})}
    return Reach(counts.get("immediate", 0), counts.get("weekly", 0))


def assert_exact() -> dict[tuple[str, ...], int]:
    """The kept count equals the join for every set of themes (and set by set, frequency by
    frequency); returns who each set's update would reach now."""
    assert kept_sets() == real_sets()
    with session_scope() as session:
        kept = {themes: count_recipients(session, themes) for themes in THEME_SETS}
        split = {themes: subscribers.reach(session, list(themes)) for themes in THEME_SETS}
    assert kept == {themes: join(themes) for themes in THEME_SETS}
    assert split == {themes: join_by_frequency(themes) for themes in THEME_SETS}
    return kept
