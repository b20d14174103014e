"""Closed sets of values are spelt once: theme slugs and their chart styles (themes.py), link
paths (tokens.LINK_PATHS), London's time zone (london.py), task and queue names
(workers/names.py), the console's send actions (an enum with no fallback)."""

from __future__ import annotations

import re
from pathlib import Path

from mailing import themes
from mailing.figures import subscribers
from mailing.subscribers.tokens import LINK_PATHS, Purpose
from workers.names import ROUTES, Queue, Task

ROOT = Path(__file__).resolve().parents[1]


def _sources(*skip: str) -> dict[str, str]:
    found = {}
    for top in ("mailing", "workers", "templates"):
        for path in ROOT.joinpath(top).rglob("*"):
            if path.suffix not in (".py", ".html", ".txt") or "migrations" in path.parts:
                continue
            name = str(path.relative_to(ROOT))
            if name not in skip:
                found[name] = path.read_text()
    return found


def test_a_theme_is_spelt_only_in_themes_py() -> None:
    slugs = re.compile("|".join(re.escape(t) for t in themes.ALL_THEMES if t != "healthy-minds"))
    assert {n for n, text in _sources("mailing/themes.py").items() if slugs.search(text)} == set()
    # Every place that lists themes derives from the one list, chart styles included.
    assert set(subscribers.STYLES) == set(themes.THEMES) == {t.slug for t in themes.THEME_LIST}
    from mailing.web.forms import SubscriptionIn

    limit = [m for m in SubscriptionIn.model_fields["themes"].metadata if hasattr(m, "max_length")]
    assert [m.max_length for m in limit] == [len(themes.THEMES)]


def test_link_paths_are_spelt_only_in_tokens_py() -> None:
    # A route template in a docstring ("/confirm/{token}") names the route, not a link.
    paths = re.compile(
        "(" + "|".join(re.escape(p) for p in LINK_PATHS.values()) + r")(?!\{token\})"
    )
    spelt = {n for n, t in _sources("mailing/subscribers/tokens.py").items() if paths.search(t)}
    assert spelt == set()
    assert LINK_PATHS[Purpose.UNSUBSCRIBE] == "/unsubscribe/"


def test_london_is_defined_once() -> None:
    zone = re.compile(r"ZoneInfo\(\s*[\"']Europe/London")
    assert [n for n, t in _sources().items() if zone.search(t)] == ["mailing/clock.py"]


def test_every_task_has_one_name_and_one_queue() -> None:
    from workers.celery_app import app, configure

    configure(embedded=True)
    import workers.tasks  # noqa: F401  (registers the tasks)

    ours = {name for name in app.tasks if name.startswith("workers.")}
    assert ours == {t.value for t in Task}
    routes = app.conf.task_routes
    assert {name: route["queue"] for name, route in routes.items()} == {
        t.value: q.value for t, q in ROUTES.items()
    }
    assert set(ROUTES.values()) == set(Queue)


def test_the_console_send_actions_are_a_closed_set_without_a_fallback() -> None:
    from mailing.web.routes.console import sending

    assert set(sending.ACTIONS) == set(sending.SendAction)
    assert sending.ACTIONS.get("explode") is None  # type: ignore[call-overload]
