"""The connection policy: relay connections are persistent, kept open across chunks and tasks
(and replaced when the relay settings change); nothing opens a connection for one email."""

from __future__ import annotations

import threading
from typing import Any

from mailing.config import get_settings
from mailing.mail.relay import Mailer

_local = threading.local()


def thread_mailer() -> Mailer:
    """This thread's persistent relay connection."""
    settings = get_settings()
    key = (settings.smtp_host, settings.smtp_port, settings.smtp_username)
    current: tuple[tuple[Any, ...], Mailer] | None = getattr(_local, "mailer", None)
    if current is None or current[0] != key:
        if current is not None:
            current[1].close()
        current = (key, Mailer(settings))
        _local.mailer = current
    return current[1]
