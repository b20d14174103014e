"""The one email builder: every email goes through `prepare` and then `Prepared.personalise`.

Python's email package builds only a few hundred two-part messages a second, so a message is
built and serialised once, with placeholders where the recipient's address, links and
Message-ID go, and each copy is made by joining byte segments. A one-off email (a confirmation)
is simply a Prepared message personalised once.

A placeholder carries a random marker chosen when the process starts, so text written by staff
(a subject, a body) can never produce one: a per-recipient value goes only where a template
puts it.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from typing import Any

from mailing.config import Settings, get_settings
from mailing.deliverability.returnpath import mailto_unsubscribe
from mailing.rendering import render
from mailing.subscribers.tokens import LINK_PATHS, Purpose

_MARKER = secrets.token_hex(4)
PLACEHOLDER = re.compile(rb"@@" + _MARKER.encode() + rb"([A-Z_]+)@@")


def placeholder(name: str) -> str:
    return f"@@{_MARKER}{name}@@"


TO = "TO"
MESSAGE_ID = "MESSAGE_ID"
UNSUBSCRIBE = "UNSUBSCRIBE"  # a subscriber's unsubscribe token
MANAGE = "MANAGE"  # a subscriber's preferences token


class HeaderInjection(ValueError):
    pass


@dataclass(frozen=True)
class Prepared:
    """A serialised message, split at its placeholders."""

    segments: tuple[bytes, ...]
    names: tuple[str, ...]  # names[i] goes between segments[i] and segments[i + 1]
    envelope_from: str
    required: frozenset[str] = field(default_factory=frozenset)
    id_domain: str = "localhost"

    def personalise(self, values: Mapping[str, str]) -> bytes:
        """One copy; a fresh Message-ID is made unless `values` gives one."""
        encoded: dict[str, bytes] = {}
        for name in self.required:
            value = (
                values[name]
                if name != MESSAGE_ID
                else values.get(name) or f"<{uuid.uuid4().hex}@{self.id_domain}>"
            )
            if "\r" in value or "\n" in value or "\x00" in value:
                raise HeaderInjection(f"line break in value for {name}")
            encoded[name] = value.encode("ascii")
        parts: list[bytes] = [self.segments[0]]
        for name, seg in zip(self.names, self.segments[1:], strict=True):
            parts.append(encoded[name])
            parts.append(seg)
        return b"".join(parts)


def prepare(
    template: str,
    *,
    subject: str,
    context: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> Prepared:
    """Render templates/emails/{template}.txt and .html into a multipart/alternative message.

    `context` may hold placeholder("NAME") strings wherever per-recipient values belong; the
    To and Message-ID headers are always placeholders.
    """
    settings = settings or get_settings()
    text = render(f"emails/{template}.txt", subject=subject, **context)
    html = render(f"emails/{template}.html", subject=subject, **context)

    msg = EmailMessage(policy=SMTP)
    name, addr = parseaddr(settings.from_address)
    msg["From"] = str(HeaderAddress(display_name=name, addr_spec=addr)) if name else addr
    msg["To"] = placeholder(TO)
    msg["Subject"] = _no_breaks(subject)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = placeholder(MESSAGE_ID)
    if settings.reply_to:
        msg["Reply-To"] = _no_breaks(settings.reply_to)
    for key, value in (headers or {}).items():
        msg[key] = _no_breaks(_with_mailto(value) if key == "List-Unsubscribe" else value)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    raw = msg.as_bytes(policy=SMTP.clone(max_line_length=998))

    pieces = PLACEHOLDER.split(raw)
    segments = tuple(pieces[0::2])
    names = tuple(p.decode() for p in pieces[1::2])
    expected = _placeholders_in(text, html, headers)
    found = set(names)
    if not expected <= found:
        # A placeholder was split by line wrapping: fail loudly at build time, not per copy.
        raise ValueError(f"placeholders lost in encoding: {sorted(expected - found)}")
    return Prepared(
        segments,
        names,
        envelope_from=addr,
        required=frozenset(found),
        id_domain=addr.rpartition("@")[2] or "localhost",
    )


def _placeholders_in(text: str, html: str, headers: Mapping[str, str] | None) -> set[str]:
    blob = (
        text + html + "".join((headers or {}).values()) + placeholder(TO) + placeholder(MESSAGE_ID)
    ).encode()
    return {m.decode() for m in PLACEHOLDER.findall(blob)}


_UNSUBSCRIBE_TOKEN = re.compile(
    re.escape(LINK_PATHS[Purpose.UNSUBSCRIBE]) + r"(@@" + _MARKER + r"[A-Z_]+@@)>"
)


def _with_mailto(value: str) -> str:
    """With MAILING_BOUNCE_DOMAIN set, List-Unsubscribe also offers `mailto:` (RFC 2369) with the
    same token as its https link: a mail program without one-click support can still unsubscribe."""
    match = _UNSUBSCRIBE_TOKEN.search(value)
    address = mailto_unsubscribe(match.group(1)) if match else None
    return f"{value}, <mailto:{address}>" if address else value


def _no_breaks(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise HeaderInjection("line break in a header value")
    return value


def recipient_values(email: str, unsubscribe_token: str, manage_token: str) -> dict[str, str]:
    """The per-copy values of a list email (an update or a weekly summary)."""
    return {TO: email, UNSUBSCRIBE: unsubscribe_token, MANAGE: manage_token}


def list_urls() -> tuple[str, str]:
    """The unsubscribe and preferences links of a list email, with their tokens as placeholders."""
    base = get_settings().base_url
    return (
        f"{base}{LINK_PATHS[Purpose.UNSUBSCRIBE]}{placeholder(UNSUBSCRIBE)}",
        f"{base}{LINK_PATHS[Purpose.MANAGE]}{placeholder(MANAGE)}",
    )


def list_headers(unsubscribe_url: str) -> dict[str, str]:
    """One-click unsubscribe (RFC 8058) and List-Id, as every list email carries them."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": get_settings().list_id,
    }


def check_header(value: str) -> None:
    """Pass `value` alone through the header machinery (raises ValueError, TypeError or
    UnicodeError), so a caller can name the field a refusal is about."""
    message = EmailMessage(policy=SMTP)
    message["Subject"] = value
    message.as_bytes()
