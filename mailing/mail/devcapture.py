"""The local mail capture for `mailing dev`: a real SMTP server on loopback, mail kept in memory.

Nothing is written to disk: restart the process and the outbox is empty.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

URL = re.compile(r"https?://[^\s<>\"']+")


@dataclass
class Captured:
    number: int
    to: list[str]
    raw: bytes
    message: EmailMessage = field(repr=False)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        return body.get_content() if body is not None else ""

    @property
    def links(self) -> list[str]:
        seen: list[str] = []
        for url in URL.findall(self.part("plain")):
            if url not in seen:
                seen.append(url)
        return seen


class Outbox:
    def __init__(self, keep: int = 200) -> None:
        self._lock = threading.Condition()
        self._messages: deque[Captured] = deque(maxlen=keep)
        self._count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self._count += 1
            self._messages.append(
                Captured(self._count, list(envelope.rcpt_tos), envelope.content, msg)
            )
            self._lock.notify_all()
        return "250 Message accepted for delivery"

    def messages(self) -> list[Captured]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Captured]:
        """Block until at least `count` messages have arrived (or the timeout passes)."""
        with self._lock:
            self._lock.wait_for(lambda: self._count >= count, timeout=timeout)
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._count = 0


class Capture:
    """An aiosmtpd server on 127.0.0.1 feeding an Outbox; port 0 picks a free port."""

    def __init__(self, port: int = 0, handler: Any = None) -> None:
        self.outbox = Outbox()
        self.controller = Controller(
            handler or self.outbox, hostname="127.0.0.1", port=port or _free_port()
        )

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> Capture:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Set by `mailing dev` so /dev/outbox can show what was captured.
active: Capture | None = None
