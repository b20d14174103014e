"""Who an update would reach, kept by the database (migration 0018: reach_count, theme_bit),
equals the join it replaced (the oracle, in tests/support/reach.py) for every set of themes,
after everything that moves it, through the app's own code: sign-up and confirmation, a change
of themes and of frequency on the preferences link, unsubscribing, the support desk, an import,
an erasure, the retention purge, and what no entry point does today (a subscriber deleted
outright with their themes, a subscriber left with no themes, a theme row rewritten). The
draft's page shows it; the migration fills it from existing rows and goes down cleanly; on
PostgreSQL, writers racing on the same subscribers all commit and it stays exact."""

from __future__ import annotations

import importlib.util
import random
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner

from mailing.db import get_engine, session_scope
from mailing.models import Subscriber, utcnow
from mailing.states import ConsentChannel, ErasureReason, Frequency
from mailing.themes import ALL_THEMES
from tests.conftest import DATABASE_URL, PG_SERVER
from tests.support.reach import assert_exact, join, kept_sets, theme_bits
from tests.support.residents import confirmed
from tests.support.sending import add_subscribers, draft
from tests.support.sending import api_staff as make_staff

MINDS, PLACES, LIVING = "healthy-minds", "healthy-places", "healthy-living"
MIGRATION = Path(__file__).parents[2] / "mailing/migrations/versions/0018_reach_counts.py"


def _sid(email: str) -> int:
    with get_engine().connect() as conn:
        found = conn.execute(sa.text("SELECT id FROM subscriber WHERE email = :e"), {"e": email})
        return int(found.scalar_one())


def _exec(sql: str, **params: Any) -> None:
    with get_engine().begin() as conn:
        conn.execute(sa.text(sql), params)


def test_every_theme_has_its_bit_as_the_migration_gives_them(database: str) -> None:
    spec = importlib.util.spec_from_file_location("reach_counts_0018", MIGRATION)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    bits = theme_bits()
    assert bits == migration.BITS
    # A new line in mailing/themes.py needs its row (a migration): the count would miss it.
    assert set(bits) == set(ALL_THEMES)
    assert len(set(bits.values())) == len(bits) and all(0 <= b < 31 for b in bits.values())


def test_the_kept_count_equals_the_join_through_everything_that_changes_it(
    client: Any, smtp: Any, tmp_path: Path
) -> None:
    from mailing.cli import main
    from mailing.subscribers import erasure, rights

    assert assert_exact()[ALL_THEMES] == 0
    add_subscribers(5, [MINDS, PLACES], prefix="rb")  # straight into the tables, in bulk
    add_subscribers(3, [LIVING], status="pending", prefix="rp")
    ann = confirmed(client, smtp, "ann@example.net", [MINDS])
    bob = confirmed(client, smtp, "bob@example.net", [PLACES, LIVING])
    confirmed(client, smtp, "cat@example.net", [MINDS], frequency="weekly")
    dan = client.post("/subscriptions", json={"email": "dan@example.net", "consent": True})
    assert dan.status_code == 202  # pending: not counted until confirmed
    assert assert_exact()[(MINDS,)] == 6

    # Themes and frequency on the preferences link, together and apart.
    assert client.post(ann, json={"themes": [PLACES, LIVING]}).status_code == 200
    assert assert_exact()[(MINDS,)] == 5
    assert client.post(bob, json={"frequency": "weekly"}).status_code == 200
    assert assert_exact()[(LIVING,)] == 1
    answer = client.post(bob, json={"themes": [MINDS], "frequency": "immediate"})
    assert answer.status_code == 200
    assert assert_exact()[(MINDS,)] == 6
    assert client.post(ann, json={"themes": []}).status_code == 200  # none: unsubscribed
    assert assert_exact()[(LIVING,)] == 0

    # The support desk changes themes and unsubscribes.
    admin = {"Authorization": f"Bearer {make_staff('admin', 'rc-admin@staff.example.org')}"}
    for email, action, body in (
        ("rb0@example.net", "themes", {"themes": [LIVING]}),
        ("rb1@example.net", "unsubscribe", {}),
    ):
        path = f"/admin/subscribers/{_sid(email)}/{action}"
        done = client.post(path, json={"reason": "asked", **body}, headers=admin)
        assert done.status_code == 200, done.text
        if action == "themes":
            assert assert_exact()[(LIVING,)] == 1
    assert assert_exact()[(MINDS,)] == 4

    # An import: new rows with evidence (active at once), a pending sign-up activated.
    csv = tmp_path / "list.csv"
    csv.write_text(
        "email,themes,frequency,consented_at,consent_wording\n"
        f"eve@example.net,{MINDS};{LIVING},,2024-03-01T10:15:00+00:00,Yes\n"
        f"fay@example.net,{PLACES},weekly,2024-03-01T10:15:00+00:00,Yes\n"
        "rp0@example.net,healthy-children,,2024-03-01T10:15:00+00:00,Yes\n"
        "gus@example.net,healthy-children,,,\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["import", str(csv), "--source", "old list"])
    assert result.exit_code == 0, result.output
    assert assert_exact()[("healthy-children",)] == 1

    # An erasure, a subscriber deleted outright with their themes, one left with none, a theme
    # row rewritten (no entry point does the last three; the triggers follow all the same).
    with session_scope() as session:
        gone = session.get(Subscriber, _sid("bob@example.net"))
        assert gone is not None
        erasure.erase(session, gone, ErasureReason.REQUEST)
    assert assert_exact()[(MINDS,)] == 4
    _exec("DELETE FROM subscriber WHERE id = :s", s=_sid("rb2@example.net"))
    _exec("DELETE FROM subscriber_theme WHERE subscriber_id = :s", s=_sid("rb3@example.net"))
    assert assert_exact()[ALL_THEMES] == 4  # rb3 is active with no themes: reached by none
    _exec(
        "UPDATE subscriber_theme SET theme = 'healthy-communities' "
        "WHERE subscriber_id = :s AND theme = :t",
        s=_sid("eve@example.net"),
        t=MINDS,
    )
    _exec(
        "UPDATE subscriber_theme SET subscriber_id = :to WHERE subscriber_id = :s",
        s=_sid("rb4@example.net"),
        to=_sid("rb3@example.net"),
    )
    assert assert_exact()[(MINDS,)] == 1

    # The draft's page reads it: rb0 (living), rb3 (minds), eve (living).
    update_id = draft(themes=[MINDS, LIVING])
    page = client.get(f"/admin/updates/{update_id}", headers=admin)
    assert page.status_code == 200 and page.json()["recipients"] == join((MINDS, LIVING)) == 3

    # Unsubscribing, then the purge deleting who left and the expired pending sign-ups.
    with session_scope() as session:
        eve = session.get(Subscriber, _sid("eve@example.net"))
        assert eve is not None
        rights.unsubscribe(session, eve, channel=ConsentChannel.EMAIL_LINK)
    assert_exact()
    with session_scope() as session:
        erasure.purge(session, utcnow() + timedelta(days=800))
    # Left: rb0 (living), rb3 (minds, places), rb4 (none), rp0 (children); cat, fay weekly.
    assert assert_exact()[ALL_THEMES] == 3


def test_the_migration_fills_the_count_from_existing_rows_and_goes_down_cleanly(
    database: str,
) -> None:
    from mailing import migrate

    config = migrate.alembic_config(DATABASE_URL)
    command.downgrade(config, "0019")
    try:
        names = sa.inspect(get_engine()).get_table_names()
        assert "reach_count" not in names and "theme_bit" not in names
        # Rows written with no trigger of 0018 to count them.
        add_subscribers(4, [MINDS], prefix="ma")
        add_subscribers(3, [MINDS, PLACES, LIVING], prefix="mb")
        add_subscribers(2, [], prefix="mc")
        add_subscribers(2, [PLACES], status="unsubscribed", prefix="md")
        add_subscribers(2, [LIVING], status="pending", prefix="me")
        _exec("UPDATE subscriber SET frequency = 'weekly' WHERE email = 'mb0@example.net'")
        command.upgrade(config, "head")
        assert assert_exact()[ALL_THEMES] == 6
        assert kept_sets() == {
            (0, "immediate"): 2,
            (2, "immediate"): 4,
            (2 | 4 | 16, "immediate"): 2,
            (2 | 4 | 16, "weekly"): 1,
        }
        _exec("UPDATE subscriber SET frequency = 'immediate' WHERE email = 'mb0@example.net'")
        assert assert_exact()[(LIVING,)] == 3  # and kept from then on

        command.downgrade(config, "0019")
        names = sa.inspect(get_engine()).get_table_names()
        assert "reach_count" not in names and "theme_bit" not in names
        with get_engine().connect() as conn:
            if conn.dialect.name == "postgresql":
                left = "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'reach_count%'"
                functions = "SELECT count(*) FROM pg_proc WHERE proname LIKE 'reach_count%'"
                assert conn.execute(sa.text(functions)).scalar_one() == 0
            else:
                left = "SELECT count(*) FROM sqlite_master WHERE name LIKE 'reach_count%'"
            assert conn.execute(sa.text(left)).scalar_one() == 0
        _exec("DELETE FROM subscriber_theme")  # no trigger left to fail
    finally:
        command.upgrade(config, "head")
    assert assert_exact()[ALL_THEMES] == 0


@pytest.mark.skipif(
    not PG_SERVER, reason="PostgreSQL's row locks and shards: SQLite has one writer"
)
@pytest.mark.parametrize("themes_by", ["the desk", "plain statements"])
def test_writers_racing_on_the_same_subscribers_all_commit_and_the_count_stays_exact(
    database: str, themes_by: str
) -> None:
    """Four connections work on the same 24 subscribers at once, in the same order, so they
    meet on one subscriber: changes of themes, a frequency change on the preferences link (the
    app's own change_preferences), an unsubscribe now and then; one connection also signs up
    batches of 16. The themes change through the support desk (the app's own, which locks the
    subscriber's row first), or through plain single-row statements that lock nothing (two of
    them adding different themes to one subscriber at once: the race the trigger's own lock is
    for). Every transaction commits (no deadlock), and the count is the join's, set by set."""
    from mailing.errors import Conflict, NotActive
    from mailing.subscribers import desk, rights

    emails = add_subscribers(24, [MINDS], prefix="race")
    ids = [_sid(e) for e in emails]
    errors: list[BaseException] = []
    go = threading.Barrier(4)
    add_theme = sa.text(
        "INSERT INTO subscriber_theme (subscriber_id, theme) VALUES (:s, :t) ON CONFLICT DO NOTHING"
    )
    drop_theme = sa.text("DELETE FROM subscriber_theme WHERE subscriber_id = :s AND theme = :t")

    def one(rng: random.Random, sid: int) -> None:
        roll = rng.random()
        with session_scope() as session:
            if roll < 0.6 and themes_by == "plain statements":
                theme = {"s": sid, "t": rng.choice(ALL_THEMES)}
                session.execute(add_theme if rng.random() < 0.6 else drop_theme, theme)
                return
            if roll < 0.6:
                themes = rng.sample(ALL_THEMES, rng.randint(1, 3))
                try:
                    desk.act(session, None, sid, desk.DeskAction.THEMES, "asked", themes)
                except Conflict:
                    pass  # no longer active
                return
            subscriber = session.get(Subscriber, sid)
            assert subscriber is not None
            channel = ConsentChannel.EMAIL_LINK
            try:
                if roll < 0.98:
                    frequency = rng.choice([Frequency.WEEKLY, Frequency.IMMEDIATE])
                    rights.change_preferences(session, subscriber, None, frequency, channel=channel)
                else:
                    rights.unsubscribe(session, subscriber, channel=channel)
            except NotActive:
                pass  # someone else unsubscribed them first

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            go.wait(30)
            for round_ in range(5):
                for sid in random.Random(round_).sample(ids, len(ids)):
                    one(rng, sid)
                if seed == 0:  # a sign-up-sized batch, meanwhile
                    add_subscribers(16, [MINDS, PLACES], prefix=f"new{round_}x")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert errors == []
    assert assert_exact()[ALL_THEMES] >= 80  # the new ones at least
