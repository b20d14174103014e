"""The data download in words: the export (rights.export) as a page a resident can read.

Built from the same dict as the JSON, so the page can never show less than the download holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mailing.clock import LONDON
from mailing.themes import THEMES

STATUS = {
    "pending": "Not confirmed yet: we send you no updates until you confirm.",
    "active": "Subscribed: we send you updates on the themes below.",
    "unsubscribed": "Unsubscribed: we send you no more updates.",
}
FREQUENCY = {
    "immediate": "Each update, as soon as it is sent",
    "weekly": "A weekly summary, on Saturday mornings",
}
CHANNEL = {
    "form": "on the sign-up form",
    "api": "through another website or app",
    "email-link": "from a link in one of our emails",
    "one-click": "with your email program's unsubscribe button",
    "email": "by email",
    "complaint": "by marking one of our emails as spam",
    "staff": "through our staff, at your request",
}
DELIVERY = {"pending": "waiting to be sent", "sent": "sent", "failed": "could not be delivered"}


def when(value: object) -> str:
    """An ISO time from the export as London wall-clock time, e.g. '3 December 2026, 14:05'."""
    if not isinstance(value, str) or not value:
        return ""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # stored in UTC
    local = moment.astimezone(LONDON)
    return f"{local.day} {local:%B %Y, %H:%M}"


def themes_in_words(slugs: object) -> str:
    names = [THEMES.get(str(s), str(s)) for s in slugs] if isinstance(slugs, list) else []
    if not names:
        return "no themes"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def event_in_words(event: dict[str, Any]) -> str:
    """One consent-ledger entry as a sentence."""
    kind = event.get("event")
    themes = themes_in_words(event.get("themes"))
    how = CHANNEL.get(str(event.get("channel") or ""), "")
    frequency = FREQUENCY.get(str(event.get("frequency") or ""), "")
    if kind == "requested":
        text = f"You asked for updates on {themes}"
    elif kind == "confirmed":
        text = f"You confirmed your subscription to {themes}"
    elif kind == "changed":
        text = f"You changed your choices to {themes}"
    elif kind == "withdrawn":
        text = "You unsubscribed"
    else:
        text = f"{kind}: {themes}"
    if how:
        text += f" {how}"
    if frequency and kind != "withdrawn":
        text += f" ({frequency.lower()})"
    return text + "."


def readable(data: dict[str, Any]) -> dict[str, Any]:
    """The export with each part also put in words, for templates/pages/my_data.html."""
    subscriber = data["subscriber"]
    return {
        "data": data,
        "status": STATUS.get(subscriber["status"], subscriber["status"]),
        "frequency": FREQUENCY.get(subscriber["frequency"], subscriber["frequency"]),
        "themes": [THEMES.get(t, t) for t in data["themes"]],
        "history": [
            {"at": when(e.get("at")), "text": event_in_words(e), "source": e.get("source")}
            for e in data["consent_ledger"]
        ],
        "deliveries": [
            {
                "subject": d["subject"],
                "status": DELIVERY.get(d["status"], d["status"]),
                "at": when(d["sent_at"]),
            }
            for d in data["deliveries"]
        ],
        "when": when,
    }
