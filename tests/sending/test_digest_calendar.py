"""When the weekly summary is due: Saturday 08:30 London time, across both clock changes, tested
with a controlled clock (plain functions given `now`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from mailing.sending.digests import due_week, send_moment, week_window


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("saturday", "moment"),
    [
        (date(2026, 1, 10), utc(2026, 1, 10, 8, 30)),  # GMT
        (date(2026, 7, 11), utc(2026, 7, 11, 7, 30)),  # BST
        (date(2026, 3, 28), utc(2026, 3, 28, 8, 30)),  # the day before the clocks go forward
        (date(2026, 4, 4), utc(2026, 4, 4, 7, 30)),  # the first Saturday of summer time
        (date(2026, 10, 24), utc(2026, 10, 24, 7, 30)),  # the day before the clocks go back
        (date(2026, 10, 31), utc(2026, 10, 31, 8, 30)),  # the first Saturday of winter time
    ],
)
def test_summary_is_due_at_0830_london_time_in_every_season(saturday, moment):
    assert send_moment(saturday) == moment
    assert due_week(moment - timedelta(seconds=1)) != saturday
    assert due_week(moment) == saturday


def test_week_across_the_spring_change_is_167_hours():
    since, until = week_window(date(2026, 4, 4))
    assert (since, until) == (utc(2026, 3, 28, 8, 30), utc(2026, 4, 4, 7, 30))
    assert until - since == timedelta(hours=167)


def test_week_across_the_autumn_change_is_169_hours():
    since, until = week_window(date(2026, 10, 31))
    assert (since, until) == (utc(2026, 10, 24, 7, 30), utc(2026, 10, 31, 8, 30))
    assert until - since == timedelta(hours=169)


def test_ordinary_week_is_168_hours_and_weeks_meet_without_gaps():
    first = week_window(date(2026, 6, 13))
    second = week_window(date(2026, 6, 20))
    assert first[1] - first[0] == timedelta(hours=168)
    assert first[1] == second[0]


def test_a_late_beat_catches_up_for_a_day_then_skips_the_week():
    moment = send_moment(date(2026, 1, 10))
    assert due_week(moment + timedelta(hours=23, minutes=59)) == date(2026, 1, 10)
    assert due_week(moment + timedelta(hours=24)) is None
    assert due_week(moment + timedelta(days=6)) is None


def test_nothing_is_due_on_other_days():
    for day in range(1, 8):
        now = utc(2026, 1, 11, 12, 0) + timedelta(days=day)
        due = due_week(now)
        assert due is None or now - send_moment(due) < timedelta(hours=24)
