"""Changes of one person's themes at once: several clicks on the preferences page, or a click
while the support desk changes them. Every path that changes a subscriber's themes or status
takes the subscriber's row lock first (records.lock), then the theme rows; the database's own
reach-count triggers lock in the same order. So the second change waits for the first, then
starts from the themes the first committed: no duplicate theme row (a 500), no deadlock (the
desk holding the subscriber and wanting the themes while the preferences change held the themes
and wanted the subscriber), and the kept counts stay exact.

The threads are lined up by the locks themselves (pg_stat_activity shows who waits) or by a
barrier, never by sleeping."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from sqlmodel import Session, select

from mailing.db import get_engine
from mailing.models import Subscriber
from mailing.states import ConsentChannel, Frequency
from mailing.subscribers import links, records, rights
from mailing.subscribers.tokens import Purpose
from mailing.themes import ALL_THEMES
from tests.conftest import PG_SERVER
from tests.support.helpers import lock_waiters
from tests.support.reach import assert_exact
from tests.support.sending import add_subscribers, api_staff, wait_until

pytestmark = pytest.mark.skipif(not PG_SERVER, reason="row-lock waits are PostgreSQL's")

CHILDREN, MINDS, PLACES, COMMUNITIES, LIVING = ALL_THEMES
JSON = {"accept": "application/json"}


def _person(prefix: str, themes: list[str]) -> tuple[int, str]:
    """An active subscriber with these themes, and their preferences link."""
    [email] = add_subscribers(1, themes, prefix=prefix)
    with Session(get_engine()) as session:
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        assert subscriber.id is not None
        return subscriber.id, links.url_for(Purpose.MANAGE, subscriber)


def _state(subscriber_id: int) -> tuple[set[str], str, str]:
    """Their themes, frequency and status as committed."""
    with Session(get_engine()) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        themes = set(records.themes_of(session, subscriber_id))
        return themes, subscriber.frequency.value, subscriber.status.value


def _in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []

    def run() -> None:
        try:
            answers.append(call())
        except BaseException as exc:  # reported by the test, not lost in the thread
            answers.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


def _waiters(n: int, what: str) -> None:
    wait_until(lambda: lock_waiters() >= n, 20, what)


def test_a_change_that_waited_for_another_starts_from_the_themes_it_committed(
    client: Any,
) -> None:
    sid, preferences = _person("waits", [MINDS])
    held = Session(get_engine())
    subscriber = held.get(Subscriber, sid)
    assert subscriber is not None
    # The first change, still open: the app's own, holding what it holds until it commits.
    outcome = rights.change_preferences(
        held, subscriber, [MINDS, PLACES], None, channel=ConsentChannel.API
    )
    assert outcome == rights.ThemesOutcome.CHANGED
    held.flush()
    thread, answers = _in_thread(
        lambda: client.post(preferences, json={"themes": [PLACES, LIVING]}, headers=JSON)
    )
    _waiters(1, "the second change to wait for the first")
    held.commit()
    held.close()
    thread.join(60)
    [answer] = answers
    # Before the lock came first, this one deleted the themes it could see (none left), then
    # inserted healthy-places again: a duplicate key, a 500.
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["themes"]) == {PLACES, LIVING}
    assert _state(sid) == ({PLACES, LIVING}, "immediate", "active")
    assert_exact()


def test_simultaneous_changes_on_the_preferences_link_all_succeed_and_the_count_stays_exact(
    client: Any,
) -> None:
    sid, preferences = _person("many", [MINDS, PLACES])
    add_subscribers(3, [PLACES], prefix="others")  # counted too, untouched
    rng = random.Random(18)
    clicks = 6
    for _round in range(8):
        asked = [
            (set(rng.sample(ALL_THEMES, rng.randint(1, 3))), rng.choice(["immediate", "weekly"]))
            for _ in range(clicks)
        ]
        go = threading.Barrier(clicks)

        def click(themes: set[str], frequency: str) -> Any:
            body = {"themes": sorted(themes), "frequency": frequency}
            go.wait(30)
            return client.post(preferences, json=body, headers=JSON)

        started = [_in_thread(lambda t=t, f=f: click(t, f)) for t, f in asked]
        for thread, _ in started:
            thread.join(60)
        answers = [answer for _, [answer] in started]
        assert [a.status_code for a in answers] == [200] * clicks, [a.text for a in answers]
        # Each one's answer is what it asked for (nothing of another's in between) ...
        got = [(set(a.json()["themes"]), a.json()["frequency"]) for a in answers]
        assert got == asked
        # ... and what stays is one of them, whole: its themes with its frequency.
        themes, frequency, status = _state(sid)
        assert status == "active" and (themes, frequency) in asked
        assert_exact()


def test_the_preferences_link_and_the_support_desk_on_one_person_do_not_deadlock(
    client: Any,
) -> None:
    """The order that deadlocked: a change of frequency holds the subscriber's row; the desk
    queues for that row; a change of themes on the link deleted the theme rows, then queued for
    the row behind the desk. When the row came free the desk had it and wanted the theme rows,
    which the link held: PostgreSQL killed one of them (a 500). Now the link queues for the
    row before it touches a theme, so each waits its turn."""
    sid, preferences = _person("crossed", [MINDS])
    admin = {"Authorization": f"Bearer {api_staff('admin', 'desk-race@staff.example.org')}"}
    held = Session(get_engine())
    subscriber = held.get(Subscriber, sid)
    assert subscriber is not None
    rights.change_preferences(held, subscriber, None, Frequency.WEEKLY, channel=ConsentChannel.API)
    held.flush()
    desk_thread, desk_answers = _in_thread(
        lambda: client.post(
            f"/admin/subscribers/{sid}/themes",
            json={"reason": "asked by phone", "themes": [LIVING]},
            headers=admin,
        )
    )
    _waiters(1, "the desk to wait for the change of frequency")
    link_thread, link_answers = _in_thread(
        lambda: client.post(preferences, json={"themes": [CHILDREN, COMMUNITIES]}, headers=JSON)
    )
    _waiters(2, "the preferences link to wait too")
    held.commit()
    held.close()
    desk_thread.join(60)
    link_thread.join(60)
    [by_desk], [by_link] = desk_answers, link_answers
    assert by_desk.status_code == 200, by_desk.text
    assert by_link.status_code == 200, by_link.text
    # The desk was first in the queue, so the link's change is the one that stays (the desk's
    # answer is read after its commit: the link's change may be in it already).
    assert by_desk.json()["themes"] in ([LIVING], [CHILDREN, COMMUNITIES])
    assert set(by_link.json()["themes"]) == {CHILDREN, COMMUNITIES}
    assert _state(sid) == ({CHILDREN, COMMUNITIES}, "weekly", "active")
    assert_exact()


def test_the_link_and_the_desk_racing_many_times_all_succeed_and_the_count_stays_exact(
    client: Any,
) -> None:
    sid, preferences = _person("mixed", [MINDS])
    admin = {"Authorization": f"Bearer {api_staff('admin', 'desk-mixed@staff.example.org')}"}
    rng = random.Random(2018)
    for _round in range(6):
        asked = [sorted(rng.sample(ALL_THEMES, rng.randint(1, 3))) for _ in range(6)]
        go = threading.Barrier(len(asked))

        def change(i: int, themes: list[str]) -> Any:
            go.wait(30)
            if i % 2:
                body = {"reason": "asked by letter", "themes": themes}
                return client.post(f"/admin/subscribers/{sid}/themes", json=body, headers=admin)
            return client.post(preferences, json={"themes": themes}, headers=JSON)

        started = [_in_thread(lambda i=i, t=t: change(i, t)) for i, t in enumerate(asked)]
        for thread, _ in started:
            thread.join(60)
        answers = [answer for _, [answer] in started]
        assert [a.status_code for a in answers] == [200] * len(asked), [a.text for a in answers]
        themes, _, status = _state(sid)
        assert status == "active" and sorted(themes) in asked
        assert_exact()


def test_the_preferences_link_and_the_erase_link_on_one_person_do_not_deadlock(
    client: Any,
) -> None:
    """Erasure deletes the theme rows before the subscriber's: it locks the subscriber's row
    first too, or a change of themes holding that row and waiting for the theme rows would
    deadlock with it. The change queued first goes first; then the person is erased."""
    sid, preferences = _person("leaving", [MINDS])
    held = Session(get_engine())
    subscriber = held.get(Subscriber, sid)
    assert subscriber is not None
    erase_link = links.url_for(Purpose.ERASE, subscriber)
    rights.change_preferences(held, subscriber, None, Frequency.WEEKLY, channel=ConsentChannel.API)
    held.flush()
    link_thread, link_answers = _in_thread(
        lambda: client.post(preferences, json={"themes": [PLACES]}, headers=JSON)
    )
    _waiters(1, "the preferences link to wait for the change of frequency")
    erase_thread, erase_answers = _in_thread(lambda: client.post(erase_link, headers=JSON))
    _waiters(2, "the erase link to wait too")
    held.commit()
    held.close()
    link_thread.join(60)
    erase_thread.join(60)
    [changed], [erased] = link_answers, erase_answers
    assert changed.status_code == 200, changed.text
    assert erased.status_code == 200, erased.text
    with Session(get_engine()) as session:
        assert session.get(Subscriber, sid) is None
    assert_exact()
