"""The five themes of the Health Inequalities Strategy updates list, the only list there is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Theme:
    """A theme and everything shown with it. Adding a theme means adding one line here."""

    slug: str
    title: str
    # How the figures chart draws it: a colour and a distinct dash and marker, so the lines
    # differ by more than colour alone.
    colour: str
    dash: str
    marker: str


THEME_LIST: tuple[Theme, ...] = (
    Theme("healthy-children", "Healthy Children", "#1d4f91", "", "circle"),
    Theme("healthy-minds", "Healthy Minds", "#00703c", "8 4", "square"),
    Theme("healthy-places", "Healthy Places", "#d4351c", "2 3", "triangle"),
    Theme("healthy-communities", "Healthy Communities", "#6f3c97", "12 4 2 4", "diamond"),
    Theme("healthy-living", "Healthy Living", "#505a5f", "4 4", "cross"),
)
THEMES: dict[str, str] = {t.slug: t.title for t in THEME_LIST}
ALL_THEMES: tuple[str, ...] = tuple(THEMES)
STYLES: dict[str, tuple[str, str, str]] = {t.slug: (t.colour, t.dash, t.marker) for t in THEME_LIST}


class UnknownTheme(ValueError):
    pass


def normalise_themes(slugs: Iterable[str] | None, *, empty_means_all: bool = True) -> list[str]:
    """Validate theme slugs and return them in the list's canonical order, without repeats."""
    chosen = set()
    for slug in slugs or ():
        if slug not in THEMES:
            raise UnknownTheme(
                f"'{slug[:40]}' is not one of our themes; choose from: " + ", ".join(ALL_THEMES)
            )
        chosen.add(slug)
    if not chosen and empty_means_all:
        return list(ALL_THEMES)
    return [t for t in ALL_THEMES if t in chosen]


def theme_titles(slugs: Iterable[str]) -> list[str]:
    return [THEMES[s] for s in slugs]


def stored_themes(column: str) -> list[str]:
    """The known themes in a comma-separated column (as updates store them)."""
    return [t for t in column.split(",") if t in THEMES]
