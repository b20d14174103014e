"""A text-contrast check in the page as drawn, in the states a person sees: loaded, with the
pointer over each control, and with each control focused.

axe-core checks contrast only where it can be sure of the background, and never in :hover or
:focus, so white text on a white button that turns yellow when focused passed it. This walks every
element that holds text, works out the colour behind it (blending translucent layers up to the
first opaque one) and measures WCAG 2.2's ratio: 4.5:1 for normal text, 3:1 for large text
(24 px, or 18.66 px bold). Text on a background image is left to the eye.
"""

from __future__ import annotations

from typing import Any

INTERACTIVE = "a[href], button, summary, input:not([type=hidden]), select, textarea"

_BODY = """
([root, scope]) => {
  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c || "");
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(parseFloat);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a), a: 1,
  });
  const lum = ({r, g, b}) => {
    const f = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.backgroundImage && s.backgroundImage !== "none") return null;
      const c = parse(s.backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = {r: 255, g: 255, b: 255, a: 1};
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const hidden = (el, s) => {
    if (s.visibility === "hidden" || s.display === "none") return true;
    if (parseFloat(s.opacity) === 0) return true;
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) return true;
    for (let e = el; e; e = e.parentElement) {
      const t = getComputedStyle(e);
      if (t.clip === "rect(0px, 0px, 0px, 0px)" || t.clipPath === "inset(50%)") return true;
    }
    return false;
  };
  const rootEl = root === null ? document.body : document.querySelectorAll(scope)[root];
  const found = [];
  for (const el of [rootEl, ...rootEl.querySelectorAll("*")]) {
    if (!Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const s = getComputedStyle(el);
    if (hidden(el, s)) continue;
    const bg = behind(el);
    const fg = parse(s.color);
    if (!bg || !fg) continue;
    const a = lum(over(fg, bg)), b = lum(bg);
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(s.fontSize), bold = parseInt(s.fontWeight, 10) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) {
      const text = Array.from(el.childNodes).filter((n) => n.nodeType === 3)
        .map((n) => n.textContent.trim()).join(" ").slice(0, 40);
      found.push(`${el.tagName.toLowerCase()}${el.className ? "." + el.className : ""} ` +
        `"${text}": ${ratio.toFixed(2)}:1 (needs ${needed}:1; ${s.color} on ` +
        `rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)}))`);
    }
  }
  return found;
}
"""

_INSTALL = """
() => {
  if (window.__contrast) return;
  window.__contrast = MEASURE;
}
""".replace("MEASURE", _BODY)

# Focus every control in turn and measure it, in one call (focus needs no pointer).
_FOCUS_ALL = """
(scope) => {
  const found = [];
  const all = document.querySelectorAll(scope);
  for (let i = 0; i < all.length; i++) {
    const el = all[i];
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    el.focus();
    for (const p of window.__contrast([i, scope])) found.push(p);
  }
  if (document.activeElement) document.activeElement.blur();
  return found;
}
"""

# One control per look: controls of the same tag and classes inside the same parent classes
# hover alike, so each is pointed at once.
_LOOKS = """
(scope) => Array.from(document.querySelectorAll(scope)).map((el) =>
  [el.tagName, el.className, el.parentElement ? el.parentElement.className : ""].join("|"))
"""


def contrast_problems(page: Any) -> list[str]:
    """Every text below its contrast ratio on the page: as loaded, with each control focused,
    and with the pointer over one control of each look (each named with the state)."""
    page.evaluate(_INSTALL)
    problems = [
        f"loaded: {p}" for p in page.evaluate("(s) => window.__contrast([null, s])", INTERACTIVE)
    ]
    problems += [f"focus: {p}" for p in page.evaluate(_FOCUS_ALL, INTERACTIVE)]
    controls = page.locator(INTERACTIVE)
    seen: set[str] = set()
    for index, look in enumerate(page.evaluate(_LOOKS, INTERACTIVE)):
        if look in seen:
            continue
        control = controls.nth(index)
        if not control.is_visible():
            continue
        seen.add(look)
        control.scroll_into_view_if_needed()
        box = control.bounding_box()
        # A control moved off the page until focused (the skip link) cannot be pointed at.
        if box is None or box["x"] + box["width"] <= 0 or box["y"] + box["height"] <= 0:
            continue
        control.hover()
        measured = page.evaluate("([i, s]) => window.__contrast([i, s])", [index, INTERACTIVE])
        problems += [f"hover: {p}" for p in measured]
    page.mouse.move(0, 0)
    return sorted(set(problems))
