"""Subscriber figures for staff: counts per theme, a daily snapshot, and the chart drawn from it.

Figures only: nothing here reads or returns an address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, delete, select

from mailing.figures import kept_counts
from mailing.models import SubscriberCountSnapshot, Update, table_of, utcnow
from mailing.states import Frequency, SubscriberStatus, UpdateStatus
from mailing.themes import ALL_THEMES, STYLES, THEMES


def counts_by_theme(session: Session) -> dict[str, dict[str, int]]:
    """{theme: {status: count}} for every theme and status, zeros included (kept counts)."""
    counts = {t: {s.value: 0 for s in SubscriberStatus} for t in ALL_THEMES}
    for (theme, status), n in kept_counts.subscribers(session).items():
        if theme in counts and status in counts[theme]:
            counts[theme][status] = n
    return counts


def active_by_theme(session: Session) -> dict[str, int]:
    return {t: c[SubscriberStatus.ACTIVE.value] for t, c in counts_by_theme(session).items()}


@dataclass(frozen=True)
class Reach:
    """Active subscribers, split by how they hear from us: each update as it goes, or in the
    weekly summary (which an update reaches only on the Saturday after it is sent)."""

    immediate: int = 0
    weekly: int = 0

    @property
    def active(self) -> int:
        return self.immediate + self.weekly

    @property
    def sentence(self) -> str:
        """e.g. '3 active: 2 get each update, 1 the weekly summary'."""
        each = f"{self.immediate} get each update"
        return f"{self.active} active: {each}, {self.weekly} the weekly summary"


def reach(session: Session, themes: list[str]) -> Reach:
    """Active subscribers who chose at least one of `themes`, each counted once (kept by the
    database: migration 0018's reach_count)."""
    counts = kept_counts.reach(session, themes)
    return Reach(counts.get(Frequency.IMMEDIATE.value, 0), counts.get(Frequency.WEEKLY.value, 0))


def reach_by_theme(session: Session) -> dict[str, Reach]:
    """{theme: Reach} for every theme (the compose page's counts)."""
    return {t: reach(session, [t]) for t in ALL_THEMES}


def record_snapshot(session: Session, day: date | None = None) -> str:
    """Store today's counts per theme and status; running it again the same day replaces them."""
    key = (day or utcnow().date()).isoformat()
    counts = counts_by_theme(session)
    session.exec(delete(SubscriberCountSnapshot).where(col(SubscriberCountSnapshot.day) == key))
    for theme, by_status in counts.items():
        for status, n in by_status.items():
            session.add(SubscriberCountSnapshot(day=key, theme=theme, status=status, count=n))
    session.commit()
    return key


@dataclass(frozen=True)
class Series:
    theme: str
    title: str
    values: list[int]  # one per day in History.days


@dataclass(frozen=True)
class History:
    days: list[str]
    series: list[Series]


def active_history(session: Session, days: int = 90, *, live_today: bool = False) -> History:
    """Active subscribers per theme for each snapshot day in the last `days` days.

    With live_today, today's column is counted now instead of read from its snapshot, so a page
    shows current figures without writing (beat stores the snapshot hourly).
    """
    today = utcnow().date()
    since = (today - timedelta(days=days - 1)).isoformat()
    rows = session.exec(
        select(SubscriberCountSnapshot)
        .where(col(SubscriberCountSnapshot.day) >= since)
        .where(col(SubscriberCountSnapshot.status) == SubscriberStatus.ACTIVE.value)
        .order_by(col(SubscriberCountSnapshot.day))
    ).all()
    by_day: dict[str, dict[str, int]] = {}
    for r in rows:
        by_day.setdefault(r.day, {})[r.theme] = r.count
    if live_today:
        by_day[today.isoformat()] = active_by_theme(session)
    day_list = sorted(by_day)
    values = {t: [by_day[d].get(t, 0) for d in day_list] for t in ALL_THEMES}
    return History(day_list, [Series(t, THEMES[t], values[t]) for t in ALL_THEMES])


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    value: int
    day: str


@dataclass(frozen=True)
class Line:
    theme: str
    title: str
    colour: str
    dash: str
    marker: str
    points: list[Point]

    @property
    def path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    lines: list[Line]
    y_ticks: list[tuple[float, int]]  # (y, value)
    x_labels: list[tuple[float, str]]  # (x, day)


def chart(history: History, width: int = 640, height: int = 320) -> Chart:
    """Positions for a server-drawn SVG line chart (the template draws it)."""
    left, top, right, bottom = 48, 16, 48, 40
    pw, ph = width - left - right, height - top - bottom
    peak = max([v for s in history.series for v in s.values] or [0])
    step = _nice_step(peak)
    top_value = max(step, ((peak + step - 1) // step) * step)
    n = len(history.days)

    def x(i: int) -> float:
        return left + (pw / 2 if n == 1 else pw * i / (n - 1))

    def y(v: int) -> float:
        return top + ph - ph * v / top_value

    lines = []
    for s in history.series:
        colour, dash, marker = STYLES[s.theme]
        points = [Point(x(i), y(v), v, history.days[i]) for i, v in enumerate(s.values)]
        lines.append(Line(s.theme, s.title, colour, dash, marker, points))
    y_ticks = [(y(v), v) for v in range(0, top_value + 1, step)]
    every = max(1, (n + 5) // 6)
    x_labels = [(x(i), d) for i, d in enumerate(history.days) if i % every == 0 or i == n - 1]
    return Chart(width, height, left, top, pw, ph, lines, y_ticks, x_labels)


def _nice_step(peak: int) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000):
        if peak / step <= 5:
            return step
    magnitude: int = 10 ** (len(str(peak)) - 1)
    return magnitude


def active_total(session: Session) -> int:
    """Active subscribers, each counted once whatever their themes."""
    return kept_counts.subscribers_by_status(session)[SubscriberStatus.ACTIVE.value]


def _by_status(session: Session, status: sa.ColumnElement[str]) -> dict[str, int]:
    return {
        str(s): int(n)
        for s, n in session.execute(sa.select(status, sa.func.count()).group_by(status)).all()
    }


def stats(session: Session) -> dict[str, dict[str, int]]:
    """Counts only: subscribers by status, active subscribers by theme, updates by status."""
    subscribers = kept_counts.subscribers_by_status(session)
    update_counts = _by_status(session, table_of(Update).c.status)
    return {
        "subscribers": {s.value: subscribers.get(s.value, 0) for s in SubscriberStatus},
        "active_by_theme": active_by_theme(session),
        "updates": {s.value: update_counts.get(s.value, 0) for s in UpdateStatus},
    }
