"""What a message sent to the bounce domain is: a hard or soft bounce, a complaint report, or
something to ignore (an auto-reply, a delivery notice, garbage). Never raises on any input.

Bounces are recognised by flufl.bounce (Mailman's detectors: RFC 3464 DSNs and the non-standard
formats real servers still send); where a DSN carries a `Status:` its class decides hard (5.x.x)
from soft (4.x.x). Complaint reports are ARF (RFC 5965). What is kept of a message is its kind,
the status code and a short diagnostic with every address taken out: never the message.
"""

from __future__ import annotations

import email
import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from enum import StrEnum

from flufl.bounce import all_failures

from mailing.deliverability.returnpath import BOUNCE_PREFIX
from mailing.subscribers.tokens import LINK_PATHS, Purpose

# flufl.bounce logs each detector it runs, and the exception of one that fails (with the text).
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

DIAGNOSTIC_CHARS = 120
_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"<[^>]*>|[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")
_BOUNCE_REF = re.compile(re.escape(BOUNCE_PREFIX) + r"([A-Za-z0-9-]{1,60})@", re.IGNORECASE)
_UNSUBSCRIBE_TOKEN = re.compile(
    re.escape(LINK_PATHS[Purpose.UNSUBSCRIBE]) + r"([A-Za-z0-9._-]{10,400})>"
)
# ARF feedback types (RFC 5965) that complain about our mail; "not-spam" (RFC 6430) and anything
# unknown do not.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})


class Kind(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    status: str = ""  # the DSN status, e.g. "5.1.1"; empty when the bounce gave none
    diagnostic: str = ""  # truncated, addresses removed
    ref: str = ""  # for a report: the return-path ref of the original message, if it shows one
    unsubscribe_token: str = ""  # for a report: the original's List-Unsubscribe token, if shown


IGNORED = Verdict(Kind.IGNORED)


def classify(raw: bytes) -> Verdict:
    """The verdict on one message; anything unrecognisable is IGNORED."""
    try:
        msg = email.message_from_bytes(raw)
        return _report(msg) or _bounce(msg) or IGNORED
    except Exception:  # hostile input must never take the receiver down
        return IGNORED


def clean_diagnostic(text: str) -> str:
    """A diagnostic fit to keep: addresses out, one line, short."""
    text = _ADDRESS.sub("[address]", text)
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())[:DIAGNOSTIC_CHARS]


def clean_status(text: str) -> str:
    match = _STATUS.match(text or "")
    return ".".join(match.groups()) if match else ""


def _parts(msg: Message, content_type: str) -> list[Message]:
    return [p for p in msg.walk() if p.get_content_type() == content_type]


def _report(msg: Message) -> Verdict | None:
    """An ARF complaint report, with whatever in it names the original message."""
    reports = _parts(msg, "message/feedback-report")
    if not reports:
        return None
    fields = _first_block(reports[0])
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
    if feedback_type not in COMPLAINT_TYPES:
        return IGNORED
    original = _original_headers(msg)
    ref = _search(_BOUNCE_REF, str(fields.get("Original-Mail-From", "")))
    ref = ref or _search(_BOUNCE_REF, str(original.get("Return-Path", "")))
    token = _search(_UNSUBSCRIBE_TOKEN, str(original.get("List-Unsubscribe", "")))
    return Verdict(Kind.COMPLAINT, ref=ref, unsubscribe_token=token)


def _first_block(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return HeaderParser().parsestr(str(payload or ""))


def _original_headers(msg: Message) -> Message:
    for content_type in ("message/rfc822", "text/rfc822-headers"):
        for part in _parts(msg, content_type):
            if content_type == "message/rfc822":
                return _first_block(part)
            text = part.get_payload(decode=True) or b""
            return HeaderParser().parsestr(bytes(text).decode("utf-8", "replace"))
    return Message()


def _search(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    return match.group(1) if match else ""


def _bounce(msg: Message) -> Verdict | None:
    """A bounce: the DSN's status when it has one, else flufl.bounce's reading of the text."""
    for part in _parts(msg, "message/delivery-status"):
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else []
        for block in blocks[1:] if len(blocks) > 1 else blocks:
            if not isinstance(block, Message):
                continue
            action = str(block.get("Action", "")).strip().lower()
            status = clean_status(str(block.get("Status", "")))
            diagnostic = clean_diagnostic(str(block.get("Diagnostic-Code", "")))
            if action.startswith(("delivered", "relayed", "expanded")):
                return IGNORED
            if status.startswith("5"):
                return Verdict(Kind.HARD, status, diagnostic)
            if status.startswith("4") or action.startswith("delayed"):
                return Verdict(Kind.SOFT, status, diagnostic)
    temporary, permanent = all_failures(msg)
    if permanent:
        return Verdict(Kind.HARD, "", _first_line(msg))
    if temporary:
        return Verdict(Kind.SOFT, "", _first_line(msg))
    return None


def _first_line(msg: Message) -> str:
    """For a bounce without a DSN: the first line of its text that gives an SMTP reply code."""
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        body = part.get_payload(decode=True)
        text = bytes(body).decode("utf-8", "replace") if isinstance(body, bytes) else ""
        for line in text.splitlines():
            if re.search(r"\b[45]\d\d\b", line):
                return clean_diagnostic(line)
    return ""
