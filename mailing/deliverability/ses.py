"""Amazon SES notifications (bounce, complaint, delivery), as carried by a verified SNS message,
turned into the same verdicts `mailing inbound` makes, about the copy their envelope sender names.

SES reports `mail.source`, the envelope sender we gave it, so the return path identifies the
copy here too. The recipients' addresses in the notification are never read or kept.
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session

from mailing.deliverability import returnpath, rules
from mailing.deliverability.classify import Kind, Verdict, clean_diagnostic, clean_status
from mailing.web.jsonguard import json_too_deep


def take(session: Session, message: str) -> rules.Outcome:
    """Apply one SES notification (the SNS `Message` field); the caller commits. Nested
    deeper than any SES notification (its parse would recurse out of the stack): ignored."""
    if json_too_deep(message):
        return rules.Outcome.IGNORED
    try:
        notification = json.loads(message)
    except ValueError:
        return rules.Outcome.IGNORED
    if not isinstance(notification, dict):
        return rules.Outcome.IGNORED
    verdict = _verdict(notification)
    if verdict.kind == Kind.IGNORED:
        return rules.Outcome.IGNORED
    mail = notification.get("mail")
    source = mail.get("source") if isinstance(mail, dict) else None
    local = source.rpartition("@")[0] if isinstance(source, str) else ""
    if not local.lower().startswith(returnpath.BOUNCE_PREFIX):
        return rules.Outcome.IGNORED  # sent without a return path: nothing names the copy
    ref = returnpath.decode(local[len(returnpath.BOUNCE_PREFIX) :])
    if ref is None:
        return rules.Outcome.FORGED
    return rules.take(session, verdict, ref)


def _verdict(notification: dict[str, Any]) -> Verdict:
    kind = notification.get("notificationType") or notification.get("eventType")
    if kind == "Complaint":
        complaint = notification.get("complaint")
        feedback = complaint.get("complaintFeedbackType") if isinstance(complaint, dict) else None
        return Verdict(Kind.IGNORED) if feedback == "not-spam" else Verdict(Kind.COMPLAINT)
    if kind != "Bounce":
        return Verdict(Kind.IGNORED)  # deliveries and anything else: nothing to change
    bounce = notification.get("bounce")
    if not isinstance(bounce, dict):
        return Verdict(Kind.IGNORED)
    recipients = bounce.get("bouncedRecipients")
    first = recipients[0] if isinstance(recipients, list) and recipients else {}
    first = first if isinstance(first, dict) else {}
    status = clean_status(str(first.get("status", "")))
    diagnostic = clean_diagnostic(str(first.get("diagnosticCode", "")))
    hard = bounce.get("bounceType") == "Permanent"
    return Verdict(Kind.HARD if hard else Kind.SOFT, status, diagnostic)
