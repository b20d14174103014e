"""The five themes of the Health Inequalities Strategy updates list, the only list there is."""

from __future__ import annotations

from collections.abc import Iterable

THEMES: dict[str, str] = {
    "healthy-children": "Healthy Children",
    "healthy-minds": "Healthy Minds",
    "healthy-places": "Healthy Places",
    "healthy-communities": "Healthy Communities",
    "healthy-living": "Healthy Living",
}
ALL_THEMES: tuple[str, ...] = tuple(THEMES)


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
