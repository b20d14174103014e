"""The contrast check itself: it must catch what axe-core let through (white text on a white
button that turns readable only when focused) and pass readable text."""

from __future__ import annotations

from tests.browser.contrast import contrast_problems

OLD_REVOKE = """
<style>
  body { background: #fff; color: #0b0c0c; font: 16px sans-serif; }
  .link-button { color: #fff; background: none; border: 0; text-decoration: underline; }
  .link-button:focus { background: #ffdd00; color: #0b0c0c; }
  .dark { background: #0b0c0c; } .dark a { color: #fff; }
  a:hover { color: #0b0c0c; }
</style>
<table><tr><td>editor@example.org</td>
<td><button class="link-button">Revoke token</button></td></tr></table>
<p class="dark"><a href="#">Health Inequalities Strategy updates</a></p>
"""


def test_it_catches_white_on_white_and_a_link_that_hovers_to_black_on_black(browser):
    page = browser.new_page()
    try:
        page.set_content(OLD_REVOKE)
        problems = contrast_problems(page)
    finally:
        page.close()
    assert any(p.startswith("loaded: button") and "Revoke token" in p for p in problems), problems
    assert not any(p.startswith("focus: button") for p in problems), problems
    assert any(p.startswith("hover: a") and "Health Inequalities" in p for p in problems), problems


def test_readable_text_passes(browser):
    page = browser.new_page()
    try:
        page.set_content(
            "<style>body{background:#fff;color:#0b0c0c} a{color:#1d4f91}"
            " a:focus{background:#ffdd00;color:#0b0c0c}</style>"
            "<p>Healthy Minds <a href='#'>Change your themes</a></p>"
        )
        assert contrast_problems(page) == []
    finally:
        page.close()
