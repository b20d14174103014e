"""Update bodies from Markdown: HTML with inline styles (mail programs drop style sheets) and
plain text that reads well on its own.

Raw HTML is switched off, so everything a writer types is escaped; links survive only for http,
https and mailto. The only images are the service's own (/images/KEY.ext, updates/images.py),
served from one URL for everyone; a remote image would track who opens the email, so
`image_problems` finds every other one and drafts refuse it.
"""

from __future__ import annotations

import re
import textwrap
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup, escape

from mailing.config import get_settings
from mailing.updates.images import PATH as IMAGE_PATH

DECORATIVE = "decorative"  # ![](/images/KEY.png "decorative"): no alt text, on purpose
SAFE_SCHEMES = ("http:", "https:", "mailto:")


def _safe_link(url: str) -> bool:
    lowered = re.sub(r"[\x00-\x20]", "", url).lower()
    return lowered.startswith(SAFE_SCHEMES) or IMAGE_PATH.match(url) is not None


def _alt(token: Token) -> str:
    return "".join(c.content for c in token.children or [])


def _decorative(token: Token) -> bool:
    return str(token.attrs.get("title", "")).strip().lower() == DECORATIVE


def _link_open(renderer: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    # The only relative address a link can have is an image's: in an email it must be absolute.
    href = tokens[idx].attrs.get("href")
    if isinstance(href, str) and href.startswith("/"):
        tokens[idx].attrSet("href", get_settings().base_url + href)
    return str(renderer.renderToken(tokens, idx, options, env))


def _image_html(
    renderer: object, tokens: list[Token], idx: int, options: object, env: object
) -> str:
    token = tokens[idx]
    alt = "" if _decorative(token) else _alt(token)
    path = str(token.attrs.get("src", ""))
    if IMAGE_PATH.match(path) is None:
        return str(escape(alt))  # not ours (drafts refuse it): never load a remote image
    src = get_settings().base_url + path
    return (
        f'<img src="{escape(src)}" alt="{escape(alt)}" '
        'style="display:block;max-width:100%;height:auto;border:0;margin:0 0 16px;">'
    )


@lru_cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.validateLink = _safe_link  # type: ignore[method-assign]
    md.add_render_rule("image", _image_html)
    md.add_render_rule("link_open", _link_open)
    return md


@lru_cache
def _probe() -> MarkdownIt:
    """Sees every image the writer wrote, whatever its address, so none is silently dropped."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    return md


def image_problems(body: str) -> tuple[list[str], list[str]]:
    """(what is wrong with the body's images, the /images/… paths of our own images it uses)."""
    problems: list[str] = []
    paths: list[str] = []
    for block in _probe().parse(body):
        for token in block.children or []:
            if token.type != "image":
                continue
            src = str(token.attrs.get("src", ""))
            found = IMAGE_PATH.match(src)
            if found is None:
                problems.append(
                    f'The image "{src}" cannot be shown: upload it on the Images page and use '
                    "the /images/… address it gives (a remote image would track readers)."
                )
            elif not _alt(token).strip() and not _decorative(token):
                problems.append(
                    f"The image {src} has no alt text: describe it as ![what it shows]({src}), "
                    f'or mark it decorative as ![]({src} "decorative").'
                )
            else:
                paths.append(src)
    return problems, paths


STYLES: dict[str, str] = {
    "h1": "font-size:24px;line-height:1.25;margin:0 0 16px;",
    "h2": "font-size:20px;line-height:1.3;margin:24px 0 12px;",
    "h3": "font-size:18px;line-height:1.3;margin:20px 0 8px;",
    "h4": "font-size:16px;margin:16px 0 8px;",
    "h5": "font-size:16px;margin:16px 0 8px;",
    "h6": "font-size:16px;margin:16px 0 8px;",
    "p": "margin:0 0 16px;",
    "ul": "margin:0 0 16px;padding-left:24px;",
    "ol": "margin:0 0 16px;padding-left:24px;",
    "li": "margin:0 0 4px;",
    "a": "color:#1d4f91;text-decoration:underline;",
    "blockquote": "margin:0 0 16px;padding:0 0 0 12px;border-left:4px solid #b1b4b6;color:#484949;",
    "pre": "margin:0 0 16px;padding:12px;background:#f3f2f1;white-space:pre-wrap;",
    "code": "font-family:Consolas,Menlo,monospace;font-size:14px;",
    "hr": "border:0;border-top:1px solid #b1b4b6;margin:24px 0;",
}
_OPEN_TAG = re.compile(r"<(" + "|".join(STYLES) + r")(?=[\s>/])")


def render_html(body: str) -> Markup:
    """The body as HTML with inline styles; no HTML from the writer gets through."""
    html = _markdown().render(body)
    # markdown-it escaped everything the writer typed; only our own style attributes are added.
    styled = _OPEN_TAG.sub(lambda m: f'<{m.group(1)} style="{STYLES[m.group(1)]}"', html)
    return Markup(styled)  # noqa: S704


def render_text(body: str, width: int = 72) -> str:
    """The body as plain text: headings underlined, lists dashed, links as `text (url)`."""
    out: list[str] = []
    prefix: list[str] = []  # one entry per open blockquote / list item
    bullets: list[int | None] = []  # per open list: next number, or None for bullets
    pending_item = ""
    tokens = _markdown().parse(body)
    heading_level = 0
    for tok in tokens:
        kind = tok.type
        if kind == "heading_open":
            heading_level = int(tok.tag[1])
        elif kind == "heading_close":
            heading_level = 0
        elif kind == "bullet_list_open":
            bullets.append(None)
        elif kind == "ordered_list_open":
            bullets.append(int(str(tok.attrs.get("start", 1))))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            bullets.pop()
            out.append("")
        elif kind == "list_item_open":
            number = bullets[-1] if bullets else None
            if number is None:
                pending_item = "- "
            else:
                pending_item = f"{number}. "
                bullets[-1] = number + 1
        elif kind == "blockquote_open":
            prefix.append("> ")
        elif kind == "blockquote_close":
            prefix.pop()
        elif kind == "hr":
            out.extend(["-" * 20, ""])
        elif kind in ("fence", "code_block"):
            lead = "".join(prefix)
            out.extend(lead + "    " + line for line in tok.content.rstrip("\n").split("\n"))
            out.append("")
        elif kind == "inline":
            text = _inline_text(tok.children or [])
            if not text and not heading_level and not pending_item:
                continue  # a paragraph that held only a decorative image
            lead = "".join(prefix)
            indent = "  " * max(0, len(bullets) - 1)
            if heading_level:
                out.append(lead + text)
                out.append(lead + ("=" if heading_level == 1 else "-") * min(len(text), width))
                out.append("")
                continue
            first = lead + indent + pending_item
            rest = lead + indent + " " * len(pending_item)
            pending_item = ""
            for i, para_line in enumerate(text.split("\n")):
                out.extend(
                    textwrap.wrap(
                        para_line,
                        width,
                        initial_indent=first if i == 0 else rest,
                        subsequent_indent=rest,
                        break_long_words=False,
                        break_on_hyphens=False,
                    )
                    or [first.rstrip()]
                )
            if not bullets:
                out.append("")
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n"


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    href: str | None = None
    link_text: list[str] = []
    for child in children:
        target = link_text if href is not None else parts
        if child.type in ("text", "code_inline"):
            target.append(child.content)
        elif child.type == "image":
            if not _decorative(child) and _alt(child).strip():
                target.append(f"[Image: {_alt(child).strip()}]")
        elif child.type == "softbreak":
            target.append(" ")
        elif child.type == "hardbreak":
            target.append("\n")
        elif child.type == "link_open":
            href = str(child.attrs.get("href", ""))
            if href.startswith("/"):
                href = get_settings().base_url + href
            link_text = []
        elif child.type == "link_close":
            label = "".join(link_text)
            shown = href.removeprefix("mailto:") if href else ""
            parts.append(label if label == shown else f"{label} ({shown})")
            href = None
    return "".join(parts)
