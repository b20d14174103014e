"""Real-browser fixtures: the app served by uvicorn, Debian's Chromium driven by Playwright,
axe-core injected for accessibility checks, and full-page screenshots.

Fixtures: `live_server` (base URL), `browser`, `page` (a fresh 390x844 phone-sized page), and
`check_accessibility` / `screenshot` (plain functions, also importable from this module).
Screenshots land in test-artifacts/screenshots/{name}.png. Without /usr/bin/chromium or
axe-core (`npm ci --prefix tests/browser`) these tests skip, or fail when CI is set.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.contrast import contrast_problems
from tests.conftest import reload_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
MOBILE = {"width": 390, "height": 844}
# Long enough for a slow CI machine, short enough that a broken page fails fast.
TIMEOUT_MS = 10_000


def missing(reason: str) -> None:
    """A missing browser part is a failure in CI (the run must not pass without it), else a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------
# The app, served for real


@pytest.fixture(scope="session")
def live_server(database: str, smtp: Any, worker: Any) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, on the suite's database, worker and SMTP.

    Emails link to this server: MAILING_BASE_URL is its URL while the app is built and during
    every test that uses it (see `_live_base_url`), and is restored afterwards.
    """
    import uvicorn

    from mailing.web.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    with _base_url(url):
        app = create_app()
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True
    )
    thread.start()
    if not _wait(lambda: server.started, 15.0):
        server.should_exit = True
        pytest.fail("the live server did not start within 15 s", pytrace=False)
    yield url
    server.should_exit = True
    thread.join(10)
    sock.close()


class _base_url:
    """Sets MAILING_BASE_URL (and reloads settings) for a block, then restores it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.before: str | None = None

    def __enter__(self) -> None:
        self.before = os.environ.get("MAILING_BASE_URL")
        os.environ["MAILING_BASE_URL"] = self.url
        reload_settings()

    def __exit__(self, *exc: object) -> None:
        if self.before is None:
            os.environ.pop("MAILING_BASE_URL", None)
        else:
            os.environ["MAILING_BASE_URL"] = self.before
        reload_settings()


@pytest.fixture(autouse=True)
def _live_base_url(request: pytest.FixtureRequest) -> Iterator[None]:
    # Settings are reloaded before every test; while a test talks to the live server, emailed
    # links must point at it. Tests that run later (outside this folder) see the usual URL again.
    if "live_server" not in request.fixturenames:
        yield
        return
    with _base_url(request.getfixturevalue("live_server")):
        yield


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    event = threading.Event()
    deadline = timeout
    step = 0.02
    while deadline > 0:
        if condition():
            return True
        event.wait(step)
        deadline -= step
    return condition()


# ---------------------------------------------------------------------------------------------
# The browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium (never a downloaded build), headless, one for the whole run."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    if not AXE.exists():
        missing(f"axe-core is missing ({AXE}): run `npm ci --prefix tests/browser`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is missing: pip install -e '.[test]'")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    """A fresh context and page, phone-sized, with relative URLs resolved against the server."""
    context = browser.new_context(viewport=MOBILE, base_url=live_server)
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _console_errors[id(p)] = errors
    yield p
    _console_errors.pop(id(p), None)
    context.close()


_console_errors: dict[int, list[str]] = {}


# ---------------------------------------------------------------------------------------------
# Accessibility and screenshots


def check_accessibility(page: Any) -> None:
    """Run axe-core on the page as it is now, and the contrast check of tests/browser/contrast.py
    (loaded, hovered and focused); fail listing every WCAG 2.2 A/AA violation.

    The pages' CSP allows no inline script, so axe goes in through the DevTools protocol
    (page.evaluate), which a CSP does not govern. It also fails if the page reported a CSP
    violation: a style or script the policy blocked means the page is not shown as designed.
    """
    if not AXE.exists():
        missing(f"axe-core is missing ({AXE}): run `npm ci --prefix tests/browser`")
    source = _axe_source()
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(source)
    assert page.evaluate("() => typeof window.axe"), "axe-core could not be injected"
    result = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})",
        AXE_TAGS,
    )
    problems = []
    for v in result["violations"]:
        targets = "; ".join(" ".join(json.dumps(t) for t in node["target"]) for node in v["nodes"])
        problems.append(f"- {v['id']} ({v['impact']}): {v['help']}\n    nodes: {targets}")
    blocked = [e for e in _console_errors.get(id(page), []) if "Content Security Policy" in e]
    low_contrast = contrast_problems(page)
    report = ""
    if problems:
        report += f"axe-core found {len(problems)} violation(s) on {page.url}:\n"
        report += "\n".join(problems) + "\n"
    if low_contrast:
        report += f"text below its contrast ratio on {page.url}:\n"
        report += "\n".join(low_contrast) + "\n"
    if blocked:
        report += "the page broke its Content-Security-Policy:\n" + "\n".join(blocked)
    if report:
        print(report)
    assert not report, report


_axe_cache: list[str] = []


def _axe_source() -> str:
    if not _axe_cache:
        _axe_cache.append(AXE.read_text(encoding="utf-8"))
    return _axe_cache[0]


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page PNG to test-artifacts/screenshots/{name}.png and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(name="check_accessibility")
def _check_accessibility_fixture() -> Callable[[Any], None]:
    return check_accessibility


@pytest.fixture(name="screenshot")
def _screenshot_fixture() -> Callable[[Any, str], Path]:
    return screenshot
